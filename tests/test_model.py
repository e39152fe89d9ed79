"""LightGCN propagation and the BPR loss against torch_geometric's own implementation."""
import torch
import torch_geometric

from model import LightGCN, bpr_loss, normalized_adjacency


def random_bipartite(num_users, num_items, num_edges, seed):
    generator = torch.Generator().manual_seed(seed)
    users = torch.randint(0, num_users, (num_edges,), generator=generator)
    items = torch.randint(0, num_items, (num_edges,), generator=generator) + num_users
    edges = torch.stack([users, items])
    return torch.cat([edges, edges.flip(0)], dim=1)


def test_initialisation_uses_the_rng_as_upstream():
    # Same seed, same parameters: the published run's initial embeddings, draw for draw.
    # (Propagation against LGConv, forward and gradient: tests/test_perf.py.)
    edge_index = random_bipartite(12, 15, 60, seed=0)
    torch.manual_seed(0)
    ours = LightGCN(27, 8, 3, edge_index)
    torch.manual_seed(0)
    reference = torch_geometric.nn.LightGCN(27, 8, 3)
    assert torch.equal(ours.embedding.weight, reference.embedding.weight)


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
