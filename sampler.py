"""Negative sampling weights of ReFINe and the weighted negative draw (SPEC section 3).

    python -m pytest tests/test_sampler.py

W (num_users, num_items) starts at 1, is 0 at train positives and `real_neg_samp_prob` at
confirmed negatives. From epoch t on, each epoch refines a fresh copy of W with item-item
similarity of the current embeddings: the s items most similar to a positive of u get q
(less likely), the r items most similar to a confirmed negative of u get p (more likely),
each only where the weight is still exactly 1. A positive (u, i) is paired with one negative
j ~ W[u, :] / sum(W[u, :]).
"""
import torch


def base_sampling_weights(num_users, num_items, train_pos, train_neg, real_neg_samp_prob):
    """Dense W (num_users, num_items): 1, then 0 at train_pos (2, P), then the given weight at train_neg (2, N)."""
    weights = torch.ones(num_users, num_items, device=train_pos.device)
    weights[train_pos[0], train_pos[1]] = 0.0
    weights[train_neg[0], train_neg[1]] = real_neg_samp_prob
    return weights


def most_similar_items(item_emb: torch.Tensor, k: int, chunk_size: int = 4096) -> torch.Tensor:
    """(num_items, k) indices of each item's k highest dot-product neighbours, itself excluded.

    Row chunks keep memory at chunk_size x num_items instead of the full item-item matrix.
    """
    num_items = item_emb.size(0)
    neighbours = torch.empty(num_items, k, dtype=torch.long, device=item_emb.device)
    for start in range(0, num_items, chunk_size):
        end = min(start + chunk_size, num_items)
        similarity = item_emb[start:end] @ item_emb.t()  # (chunk, num_items)
        rows = torch.arange(end - start, device=item_emb.device)
        similarity[rows, rows + start] = float("-inf")
        neighbours[start:end] = similarity.topk(k, dim=1).indices
    return neighbours


def _replace_ones(weights, users, items, value):
    """Set weights[users, items] = value where it is exactly 1, testing all pairs before writing."""
    still_one = weights[users, items] == 1.0
    weights[users[still_one], items[still_one]] = value


def refine_weights_by_similarity(base_weights, item_emb, train_pos, train_neg, s, r, q, p):
    """A fresh copy of W refined by item similarity: q near positives first, then p near negatives.

    item_emb (num_items, dim) are the current propagated item embeddings; train_pos/train_neg
    (2, E) hold (user, item) index pairs. The base weights are left unchanged.
    """
    weights = base_weights.clone()
    neighbours = most_similar_items(item_emb, max(s, r))
    for pairs, k, value in ((train_pos, s, q), (train_neg, r, p)):
        users = pairs[0].repeat_interleave(k)
        items = neighbours[pairs[1], :k].reshape(-1)
        _replace_ones(weights, users, items, value)
    return weights


def draw_negatives(weights: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    """One item per entry of `users`, drawn with probability proportional to weights[user, :].

    torch.multinomial on the dense rows, from the global RNG: the published sampler, draw for draw.
    """
    return torch.multinomial(weights[users], num_samples=1).squeeze(1)


def shuffled_batches(num_examples: int, batch_size: int):
    """Index batches of a fresh permutation, drawn exactly as DataLoader(range(n), shuffle=True) draws it.

    Each DataLoader epoch takes two int64s from the global torch RNG: the iterator's worker base
    seed (unused without workers), then the seed of the private generator that permutes. Doing
    the same keeps every later global draw (the negatives) identical to the published run,
    without DataLoader's per-batch Python collation.
    """
    torch.empty((), dtype=torch.int64).random_()  # the DataLoader iterator's base seed
    seed = int(torch.empty((), dtype=torch.int64).random_().item())
    permutation = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed))
    return permutation.split(batch_size)
