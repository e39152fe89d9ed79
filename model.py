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


def compacted(values: torch.Tensor, keep: torch.Tensor, size: int) -> torch.Tensor:
    """(size,): values[keep] in their order, then zeros, with no read from the device (size >= the kept
    count): each kept value is scattered to its rank among the kept ones, the rest to one spare slot."""
    slot = torch.where(keep, keep.cumsum(0) - 1, size)
    return values.new_zeros(size + 1).scatter_(0, slot, values)[:size]


def true_indices(mask: torch.Tensor, count: int) -> torch.Tensor:
    """torch.nonzero(mask).squeeze(1) of a 1-D mask whose number of True entries, `count`, is known on
    the host: ascending indices, without the read-back from the GPU that nonzero makes to size its output."""
    return compacted(torch.arange(mask.numel(), device=mask.device), mask, count)


def padded_distinct_rows(weight: torch.Tensor, node_id: torch.Tensor) -> torch.Tensor:
    """(len(node_id), dim): the rows weight[unique(node_id)] in ascending id order, then zero rows.

    torch.unique's output size is data-dependent (on a GPU it waits for the device to know it);
    padding to len(node_id) rows keeps the shape known. Trailing zeros leave the sum of squares
    unchanged in exact arithmetic; in float32 the reduction may group the terms otherwise, so the
    last bit can differ from torch.unique's rows (equal bit for bit at dim 16, 32 and 64 on x86).
    """
    ids = node_id.reshape(-1).sort().values
    first = torch.ones_like(ids, dtype=torch.bool)
    first[1:] = ids[1:] != ids[:-1]
    compact = compacted(ids, first, ids.numel())  # the distinct ids, then zeros
    keep = torch.arange(ids.numel(), device=ids.device) < first.sum()
    return weight[compact] * keep.unsqueeze(1)


def distinct_rows(weight: torch.Tensor, node_id: torch.Tensor) -> torch.Tensor:
    """The rows of the batch's distinct nodes for the regulariser: on a CPU, where nothing waits,
    torch.unique's rows, exactly as published at every --embedding_dim; on a GPU the padded rows,
    which need no read from the device."""
    if weight.device.type == "cpu":
        return weight[node_id.unique()]
    return padded_distinct_rows(weight, node_id)


def bpr_loss(pos_score, neg_score, embedding_weight, node_id, lambda_reg: float = LAMBDA_REG):
    """-mean(logsigmoid(pos - neg)) + lambda * ||embedding_weight[unique(node_id)]||^2 / batch_size.

    node_id: the batch's node ids, repeats allowed (each distinct node counts once).
    """
    ranking = -F.logsigmoid(pos_score - neg_score).mean()
    regularization = lambda_reg * distinct_rows(embedding_weight, node_id).norm(p=2).pow(2) / pos_score.size(0)
    return ranking + regularization


class DispreferenceAutoencoder(torch.nn.Module):
    """ReFINe++'s autoencoder of confirmed negatives, as published (docs/method.md §6):

        encoder: Linear(n, hidden), ReLU, Linear(hidden, latent)      -- the latent code has no activation
        decoder: Linear(latent, hidden), ReLU, Linear(hidden, n), Sigmoid

    The latent code is what the LightGCN representations are aligned with. Its Linear layers keep
    PyTorch's default initialisation here; ReFINePlus re-initialises them in the published order.
    """

    def __init__(self, num_inputs: int, hidden_dim: int = 600, latent_dim: int = 64):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(num_inputs, hidden_dim), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden_dim, latent_dim))
        self.decoder = torch.nn.Sequential(torch.nn.Linear(latent_dim, hidden_dim), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden_dim, num_inputs), torch.nn.Sigmoid())

    def linears(self):
        """The Linear layers in creation order: encoder's, then decoder's."""
        return [module for module in self.modules() if isinstance(module, torch.nn.Linear)]

    def forward(self, x):
        """(reconstruction (rows, n), latent (rows, latent_dim)) of a binary matrix x (rows, n)."""
        latent = self.encoder(x)
        return self.decoder(latent), latent

    def bce_and_codes(self, x, active=None):
        """(mean BCE of reconstructing x (rows, n), latent codes (rows, latent_dim)), as forward() on every row.

        A batch holds few dislikes, so most rows of x are all zero: they share one code and one
        reconstruction, computed once here and counted with their multiplicity. Equal to the
        row-by-row computation up to float summation order (tested), several times less work.
        `active`: the ascending indices of the rows that are not all zero, where the caller knows them.
        """
        if active is None:
            active = x.any(dim=1).nonzero().squeeze(1)
        rows = torch.cat([x[active], x.new_zeros(1, x.size(1))])  # the active rows, then one all-zero row
        recon, latent = self(rows)
        row_bce = F.binary_cross_entropy(recon, rows, reduction="none").sum(dim=1)
        idle_rows = x.size(0) - active.numel()
        bce = (row_bce[:-1].sum() + idle_rows * row_bce[-1]) / x.numel()
        codes = latent[-1].expand(x.size(0), -1).index_copy(0, active, latent[:-1])
        return bce, codes


class ReFINePlus(torch.nn.Module):
    """ReFINe++ (docs/method.md §6): LightGCN over positive AND negative edges, a multi-negative
    ranking loss, and user/item autoencoders of the batch's confirmed negatives whose codes the
    LightGCN representations are pulled towards:

        L = mean_{(u,i)} log(1 + sum_j exp(s_uj - s_ui)) + 1e-7/2 ||x_0||^2                  (ranking)
          + BCE(AE_u(N), N) + BCE(AE_i(N^T), N^T) + 1e-5/2 ||theta_AE||^2                  (autoencoders)
          + MSE(out_users, z_users) + MSE(out_items, z_items)                               (alignment)

    with N the (num_users, num_items) 0/1 matrix of the batch's negative edges.
    """

    EMBEDDING_REG = 1e-7 / 2
    AE_REG = 1e-5 / 2

    def __init__(self, num_users, num_items, embedding_dim, num_layers, edge_index, hidden_dim=600):
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        # Construction draws random numbers in another order than the published model;
        # reset_parameters() below makes the published draws, from the generator state as it was here.
        with torch.random.fork_rng(devices=[]):
            self.gcn = LightGCN(num_users + num_items, embedding_dim, num_layers, edge_index)
            self.user_ae = DispreferenceAutoencoder(num_items, hidden_dim, embedding_dim)
            self.item_ae = DispreferenceAutoencoder(num_users, hidden_dim, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self):
        """Initialise as the published model does, in its order of random draws (docs/method.md §6):
        the embedding's N(0, 1) init, then each Linear's default init (weight, then bias) in the order
        user encoder, user decoder, item encoder, item decoder; then Xavier-uniform on the embedding,
        then on each Linear's weight in the same order. Biases keep their default init."""
        linears = self.user_ae.linears() + self.item_ae.linears()
        torch.nn.init.normal_(self.gcn.embedding.weight)  # nn.Embedding's own init
        for linear in linears:
            linear.reset_parameters()
        torch.nn.init.xavier_uniform_(self.gcn.embedding.weight)
        for linear in linears:
            torch.nn.init.xavier_uniform_(linear.weight)

    def propagate_embeddings(self) -> torch.Tensor:
        return self.gcn.propagate_embeddings()

    def loss(self, pos_users, pos_items, neg_items, neg_edges):
        """Total loss of one batch.

        pos_users, pos_items (P,): the batch's positive edges; neg_items (P, J): sampled
        negatives per positive; neg_edges (2, N): the batch's confirmed-negative (user, item) edges.
        """
        out = self.propagate_embeddings()
        user_out, item_out = out[:self.num_users], out[self.num_users:]
        pos_score = (user_out[pos_users] * item_out[pos_items]).sum(-1)                   # (P,)
        # index_fill_, not `x[index] = 1.0`: on CUDA that assignment waits for the device (CUDA's own
        # sync report on an H200, torch 2.11); the filled values are the same.
        dislikes = torch.zeros(self.num_users, self.num_items, device=out.device)
        dislikes.view(-1).index_fill_(0, neg_edges[0] * self.num_items + neg_edges[1], 1.0)
        disliking_users, disliked_items = dislikes.any(dim=1), dislikes.any(dim=0)
        drawn = torch.zeros(self.num_items, dtype=torch.bool, device=out.device)
        drawn.index_fill_(0, neg_items.reshape(-1), True)
        # The batch's one read from the device: the sizes of what follows.
        num_users, num_items, num_drawn = torch.stack([disliking_users.sum(), disliked_items.sum(),
                                                       drawn.sum()]).tolist()

        # Score against each distinct negative once, then pick: one matmul instead of a (P, J, dim) gather.
        # distinct_items and slot are torch.unique(neg_items, return_inverse=True).
        distinct_items = true_indices(drawn, num_drawn)
        slot = (drawn.cumsum(0) - 1)[neg_items]
        neg_score = (user_out[pos_users] @ item_out[distinct_items].t()).gather(1, slot)  # (P, J)
        ranking = multi_negative_ranking_loss(pos_score, neg_score)
        ranking = ranking + self.EMBEDDING_REG * self.gcn.embedding.weight.pow(2).sum()

        user_bce, user_latent = self.user_ae.bce_and_codes(dislikes, true_indices(disliking_users, num_users))
        item_bce, item_latent = self.item_ae.bce_and_codes(dislikes.t(), true_indices(disliked_items, num_items))
        autoencoder = (user_bce + item_bce
                       + self.AE_REG * sum(p.pow(2).sum() for ae in (self.user_ae, self.item_ae)
                                           for p in ae.parameters()))
        alignment = F.mse_loss(user_out, user_latent) + F.mse_loss(item_out, item_latent)
        return ranking + autoencoder + alignment


def multi_negative_ranking_loss(pos_score, neg_score):
    """mean over positives of log(1 + sum_j exp(s_uj - s_ui)); pos_score (P,), neg_score (P, J).

    Computed as logsumexp over [0, s_uj - s_ui] so large score gaps do not overflow.
    """
    gaps = neg_score - pos_score.unsqueeze(1)
    return torch.logsumexp(F.pad(gaps, (1, 0)), dim=1).mean()
