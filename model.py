"""LightGCN (torch_geometric) with a precomputed normalised adjacency, and the BPR loss.

    python main.py --dataset ML-100K --r 100     # trains this model

Propagation (He et al., LightGCN, SIGIR '20), K layers, no self loops:

    x_{k+1} = D^{-1/2} A D^{-1/2} x_k,        out = sum_{k=0..K} alpha_k x_k,  alpha_k = 1 / (K + 1)

Score(u, i) = <out_u, out_i>.  BPR loss of a batch of (u, i, j) triples, as torch_geometric's
`LightGCN.recommendation_loss`:

    L = -mean(log sigmoid(s_ui - s_uj)) + lambda * ||x_0[nodes]||^2 / batch_size

with `nodes` the unique node ids of the batch and x_0 the embedding table (not the propagated output).
"""
import warnings

import torch
import torch.nn.functional as F
import torch_geometric.nn

LAMBDA_REG = 1e-4  # torch_geometric's default for LightGCN.recommendation_loss

# CSR matrix products are stable for what is used here (sparse @ dense); the beta notice is noise in logs.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def normalized_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of an undirected graph as a sparse CSR matrix (num_nodes, num_nodes).

    `edge_index` (2, E) must hold both directions of every edge. Degrees are counted on the
    target node exactly as torch_geometric's gcn_norm(add_self_loops=False) does; duplicate
    edges add up, as they do in message passing.
    """
    row, col = edge_index
    degree = torch.zeros(num_nodes, dtype=torch.float32, device=edge_index.device)
    degree.index_add_(0, col, torch.ones(col.numel(), device=edge_index.device))
    inv_sqrt = degree.pow(-0.5)
    inv_sqrt[torch.isinf(inv_sqrt)] = 0.0
    weight = inv_sqrt[row] * inv_sqrt[col]
    # Message passing sends x[row] to col: entry (col, row).
    adjacency = torch.sparse_coo_tensor(torch.stack([col, row]), weight, (num_nodes, num_nodes),
                                        check_invariants=False)
    return adjacency.coalesce().to_sparse_csr()


class _SymmetricSpMM(torch.autograd.Function):
    """y = A x for a symmetric sparse A; the backward pass is A g (A^T = A).

    Autograd's generic sparse backward transposes the CSR matrix on every call, which costs
    more than the product itself; the graph is undirected, so the transpose is not needed.
    """

    @staticmethod
    def forward(ctx, adjacency, x):
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx, grad_output):
        return None, ctx.adjacency @ grad_output


class LightGCN(torch_geometric.nn.LightGCN):
    """torch_geometric's LightGCN, propagating with a normalised adjacency computed once.

    Same parameters, initialisation (and RNG use) and state_dict keys as the published model,
    so its checkpoints load here. Upstream's LGConv recomputes gcn_norm in every layer of every
    call; the product is the same up to float summation order (tested to 1e-5).
    """

    def __init__(self, num_nodes: int, embedding_dim: int, num_layers: int, edge_index: torch.Tensor):
        super().__init__(num_nodes=num_nodes, embedding_dim=embedding_dim, num_layers=num_layers)
        # Not persistent: the state_dict stays loadable by upstream code.
        self.register_buffer("adjacency", normalized_adjacency(edge_index, num_nodes), persistent=False)

    def propagate_embeddings(self) -> torch.Tensor:
        """Final node representations (num_nodes, embedding_dim): the alpha-weighted layer mean."""
        x = self.embedding.weight
        out = x * self.alpha[0]
        for layer in range(self.num_layers):
            x = _SymmetricSpMM.apply(self.adjacency, x)
            out = out + x * self.alpha[layer + 1]
        return out

    def score_pairs(self, edge_label_index: torch.Tensor) -> torch.Tensor:
        """Dot-product scores (E,) of node pairs edge_label_index (2, E)."""
        out = self.propagate_embeddings()
        return (out[edge_label_index[0]] * out[edge_label_index[1]]).sum(dim=-1)


def bpr_loss(pos_score, neg_score, embedding_weight, node_id, lambda_reg: float = LAMBDA_REG):
    """-mean(logsigmoid(pos - neg)) + lambda * ||embedding_weight[node_id]||^2 / batch_size."""
    ranking = -F.logsigmoid(pos_score - neg_score).mean()
    regularization = lambda_reg * embedding_weight[node_id].norm(p=2).pow(2) / pos_score.size(0)
    return ranking + regularization
