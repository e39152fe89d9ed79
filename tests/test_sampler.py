"""Sampling weights, the epoch-wise similarity refinement and the draws, checked by hand."""
import pytest
import torch
from scipy.stats import chisquare

import sampler

# Items 0..4 in 2-D; dot products (self excluded) give these nearest neighbours:
#   item 0 -> 1 (.9), 2 (.8)     item 1 -> 0 (.9), 2 (.72)    item 2 -> 0 (.8), 1 (.72)
#   item 3 -> 4 (.9), 1 (.1)     item 4 -> 3 (.9), 1 (.18)
ITEM_EMB = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.0], [0.0, 1.0], [0.1, 0.9]])
TRAIN_POS = torch.tensor([[0, 1], [0, 1]])  # (user 0, item 0), (user 1, item 1)
TRAIN_NEG = torch.tensor([[0, 1], [3, 4]])  # (user 0, item 3), (user 1, item 4)


def test_base_weights():
    weights = sampler.base_sampling_weights(2, 5, TRAIN_POS, TRAIN_NEG, 1.5)
    assert weights.tolist() == [[0, 1, 1, 1.5, 1], [1, 0, 1, 1, 1.5]]


def test_most_similar_items_excludes_self_and_chunks():
    expected = [[1, 2], [0, 2], [0, 1], [4, 1], [3, 1]]
    assert sampler.most_similar_items(ITEM_EMB, 2).tolist() == expected
    assert sampler.most_similar_items(ITEM_EMB, 2, chunk_size=2).tolist() == expected


def test_refinement_by_hand():
    # s=1, q=.75: user 0's positive item 0 -> neighbour 1: W[0,1] 1 -> .75
    #             user 1's positive item 1 -> neighbour 0: W[1,0] 1 -> .75
    # r=2, p=2:   user 0's negative item 3 -> 4, 1: W[0,4] 1 -> 2; W[0,1] is .75 after step (a): kept
    #             user 1's negative item 4 -> 3, 1: W[1,3] 1 -> 2; W[1,1] is 0 (a positive): kept
    base = sampler.base_sampling_weights(2, 5, TRAIN_POS, TRAIN_NEG, 1.5)
    base_before = base.clone()
    refined = sampler.refine_weights_by_similarity(base, ITEM_EMB, TRAIN_POS, TRAIN_NEG, s=1, r=2, q=0.75, p=2.0)
    assert refined.tolist() == [[0, 0.75, 1, 1.5, 2.0], [0.75, 0, 1, 2.0, 1.5]]
    # Every epoch starts from a fresh copy: the base is untouched, a second call gives the same.
    assert torch.equal(base, base_before)
    again = sampler.refine_weights_by_similarity(base, ITEM_EMB, TRAIN_POS, TRAIN_NEG, s=1, r=2, q=0.75, p=2.0)
    assert torch.equal(again, refined)


def test_q_step_runs_before_p_step():
    # With p applied first, W[0,1] would become p; ReFINe applies q first and p only where still 1.
    base = sampler.base_sampling_weights(2, 5, TRAIN_POS, TRAIN_NEG, 1.5)
    refined = sampler.refine_weights_by_similarity(base, ITEM_EMB, TRAIN_POS, TRAIN_NEG, s=2, r=2, q=0.5, p=3.0)
    # (a) s=2: user 0 item 0 -> 1, 2 get .5; user 1 item 1 -> 0 gets .5, 2 gets .5
    # (b) r=2: user 0 item 3 -> 4 gets 3, 1 stays .5; user 1 item 4 -> 3 gets 3, 1 stays 0
    assert refined.tolist() == [[0, 0.5, 0.5, 1.5, 3.0], [0.5, 0, 0.5, 3.0, 1.5]]


def test_shuffled_batches_match_dataloader_and_rng_stream():
    torch.manual_seed(7)
    loader = torch.utils.data.DataLoader(range(2500), shuffle=True, batch_size=1024)
    expected = [batch.clone() for batch in loader]
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    got = sampler.shuffled_batches(2500, 1024)
    assert [len(b) for b in got] == [1024, 1024, 452]
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert torch.equal(torch.rand(3), expected_next)  # later draws see the same RNG state


def test_draws_follow_weights():
    weights = torch.tensor([[0.0, 0.75, 1.0, 1.5, 2.0]])
    torch.manual_seed(0)
    draws = sampler.draw_negatives(weights, torch.zeros(40000, dtype=torch.long))
    counts = torch.bincount(draws, minlength=5)
    assert counts[0] == 0
    observed = counts[1:].double().numpy()
    probabilities = weights[0, 1:].double().numpy() / weights.sum().item()
    assert chisquare(observed, probabilities * observed.sum()).pvalue > 1e-3


def test_refine_plus_sampler_keeps_w_behind_the_sampler_interface():
    """ReFINe++'s W: 0 at every graph edge, then the negative weight at confirmed negatives; never refined;
    draw gives J distinct items per positive, none of weight 0."""
    graph_edges = torch.tensor([[0, 0, 1, 1], [1, 3, 0, 2]])
    train_neg = torch.tensor([[0, 1], [3, 4]])
    negatives = sampler.RefinePlusNegativeSampler(2, 6, graph_edges, train_neg, 1.5, num_negatives=3)
    expected = torch.tensor([[1, 0, 1, 1.5, 1, 1], [0, 1, 0, 1, 1.5, 1]])
    assert torch.equal(negatives.base().to_dense(), expected)
    assert negatives.refine(torch.randn(6, 4)) is negatives.base()
    torch.manual_seed(0)
    draws = negatives.base().draw(torch.tensor([1, 0, 1]))
    assert draws.shape == (3, 3) and all(len(set(row.tolist())) == 3 for row in draws)
    assert all(row.tolist() == draws[1].tolist() for row in draws)  # shared: the second positive's row
    assert not set(draws[1].tolist()) & {1}  # user 0's graph edge (weight 0) is never drawn
    with pytest.raises(ValueError, match="finite and >= 0"):
        sampler.MultiNegativeWeights(torch.tensor([[1.0, -1.0]]), 1, "shared")
