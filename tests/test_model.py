"""LightGCN propagation and the BPR loss against torch_geometric's own implementation."""
import pytest
import torch
import torch_geometric

from model import LightGCN, bpr_loss, normalized_adjacency


def random_bipartite(num_users, num_items, num_edges, seed):
    generator = torch.Generator().manual_seed(seed)
    users = torch.randint(0, num_users, (num_edges,), generator=generator)
    items = torch.randint(0, num_items, (num_edges,), generator=generator) + num_users
    edges = torch.stack([users, items])
    return torch.cat([edges, edges.flip(0)], dim=1)


@pytest.mark.parametrize("num_layers,dim", [(1, 4), (3, 8), (4, 16)])
def test_propagation_equals_pyg_lightgcn(num_layers, dim):
    edge_index = random_bipartite(12, 15, 60, seed=num_layers)  # duplicates and isolated nodes included
    num_nodes = 27
    torch.manual_seed(0)
    ours = LightGCN(num_nodes, dim, num_layers, edge_index)
    torch.manual_seed(0)
    reference = torch_geometric.nn.LightGCN(num_nodes, dim, num_layers)
    # Same seed, same parameters: initialisation consumes the RNG as upstream does.
    assert torch.equal(ours.embedding.weight, reference.embedding.weight)

    out = ours.propagate_embeddings()
    expected = reference.get_embedding(edge_index)
    assert torch.allclose(out, expected, atol=1e-5)
    # Gradients through the custom sparse product equal autograd through LGConv.
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    assert torch.allclose(ours.embedding.weight.grad, reference.embedding.weight.grad, atol=1e-5)


def test_normalized_adjacency_by_hand():
    # Path user0 - item2 - user1: deg(0)=1, deg(1)=1, deg(2)=2 -> weights 1/sqrt(2).
    edge_index = torch.tensor([[0, 2, 1, 2], [2, 0, 2, 1]])
    dense = normalized_adjacency(edge_index, 3).to_dense()
    w = 2 ** -0.5
    assert torch.allclose(dense, torch.tensor([[0, 0, w], [0, 0, w], [w, w, 0]]))


def test_state_dict_loads_into_upstream_model():
    edge_index = random_bipartite(4, 5, 10, seed=1)
    ours = LightGCN(9, 8, 2, edge_index)
    reference = torch_geometric.nn.LightGCN(9, 8, 2)
    reference.load_state_dict(ours.state_dict())  # strict: same keys, no extra buffers
    assert torch.equal(reference.embedding.weight, ours.embedding.weight)


def test_bpr_loss_equals_pyg_recommendation_loss():
    torch.manual_seed(3)
    reference = torch_geometric.nn.LightGCN(10, 8, 2)
    pos, neg = torch.randn(6), torch.randn(6)
    node_id = torch.tensor([0, 2, 3, 7, 9])
    expected = reference.recommendation_loss(pos, neg, node_id=node_id)
    got = bpr_loss(pos, neg, reference.embedding.weight, node_id)
    assert torch.equal(got, expected)
    # And by hand: -mean(log sigmoid(pos - neg)) + 1e-4 * ||x0[nodes]||^2 / 6.
    by_hand = (-torch.log(torch.sigmoid(pos - neg)).mean()
               + 1e-4 * (reference.embedding.weight[node_id] ** 2).sum() / 6)
    assert torch.allclose(got, by_hand)
