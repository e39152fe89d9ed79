"""Negative sampling weights of ReFINe and the weighted negative draw (docs/method.md §3).

    python -m pytest tests/test_sampler.py tests/test_perf.py

W (num_users, num_items) starts at 1, is 0 at train positives and `real_neg_samp_prob` at
confirmed negatives. From epoch t on, each epoch refines a fresh copy of W with item-item
similarity of the current embeddings: the s items most similar to a positive of u get q
(less likely), the r items most similar to a confirmed negative of u get p (more likely),
each only where the weight is still exactly 1. A positive (u, i) is paired with one negative
j ~ W[u, :] / sum(W[u, :]).

Two samplers compute this, with the same interface (`build_negative_sampler`); ReFINe++'s
fixed W and its draw of several negatives without replacement sit behind the same interface
(RefinePlusNegativeSampler):

- DenseNegativeSampler: the published design, a dense W and torch.multinomial's draw per batch row;
  on a CPU it draws from the global RNG exactly as the published code does (runs match its CPU
  log); on a GPU the draws have the same distribution, not the same values (CUDA's random numbers
  depend on the GPU model and torch version, so no GPU run replays a published log).
- SparseNegativeSampler: W stored as 1 plus a sorted list of exceptions (the entries != 1),
  memory O(train pairs + refined pairs) instead of O(users x items); each negative costs one
  uniform number and two binary searches. Same distribution, different RNG use.
"""
import torch


def base_sampling_weights(num_users, num_items, train_pos, train_neg, real_neg_samp_prob):
    """Dense W (num_users, num_items): 1, then 0 at train_pos (2, P), then the given weight at train_neg (2, N)."""
    weights = torch.ones(num_users, num_items, device=train_pos.device)
    weights[train_pos[0], train_pos[1]] = 0.0
    weights[train_neg[0], train_neg[1]] = real_neg_samp_prob
    return weights


def most_similar_items(item_emb: torch.Tensor, k: int, chunk_size: int = None) -> torch.Tensor:
    """(num_items, k) indices of each item's k highest dot-product neighbours, itself excluded.

    Row chunks keep memory at chunk_size x num_items instead of the full item-item matrix
    (default: about 2**25 scores, 128 MiB, per chunk; one chunk below 5,792 items).
    """
    num_items = item_emb.size(0)
    chunk_size = chunk_size or max(1, (1 << 25) // num_items)
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


def check_weights(weights: torch.Tensor) -> None:
    """W must be finite and >= 0: the check torch.multinomial makes on every call, made once per W here
    (on a GPU it reads a value back from the device, which would stall every batch)."""
    if weights.numel() and not bool((weights.max() < float("inf")) & (weights.min() >= 0)):
        raise ValueError("sampling weights must be finite and >= 0")


def exponential_race(rows: torch.Tensor, num_samples: int) -> torch.Tensor:
    """(R, num_samples) indices drawn without replacement from each row of `rows` (R, n), with
    probability proportional to its weights: the num_samples largest rows / E, E ~ Exp(1) i.i.d.

    This is how torch.multinomial draws one sample or draws without replacement, written out: on a
    CPU the same random numbers and the same result, without its per-call validity check, which
    reads a value back from a GPU (check_weights makes it once per W instead).
    """
    scores = rows / torch.empty_like(rows).exponential_(1)
    if num_samples == 1:
        return scores.argmax(dim=-1, keepdim=True)
    return scores.topk(num_samples).indices


def draw_negatives(weights: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    """One item per entry of `users`, drawn with probability proportional to weights[user, :].

    torch.multinomial's draw, from the global RNG: on a CPU the published sampler, draw for draw;
    on a GPU the same distribution (CUDA's random numbers depend on the GPU model and torch version).
    """
    return exponential_race(weights[users], 1).squeeze(1)


def refine_plus_negatives(weights, pos_users, num_negatives, mode="shared"):
    """(P, J) ReFINe++ negatives for the batch's positive users pos_users (P,): J = num_negatives items
    per positive, drawn without replacement with probability proportional to weights[u, :].

    - shared (published): one torch.multinomial over the rows of ALL positives, of which the second
      row serves every positive (the published quirk; a one-positive batch uses its own). All P rows
      of random numbers are drawn, only the kept row is ranked: on a CPU the published draws, draw for
      draw; on a GPU the same distribution;
    - shared_fast: the same quirk, drawing only that row: the same distribution, P times fewer random
      numbers, other values;
    - per_positive: every positive its own row.
    """
    if mode == "per_positive":
        return exponential_race(weights[pos_users], num_negatives)
    second = min(1, len(pos_users) - 1)
    # A one-element slice, not pos_users[second]: indexing with a 0-d tensor reads it back from the GPU.
    row_weights = weights[pos_users[second:second + 1]]  # (1, num_items)
    if mode == "shared":
        noise = torch.empty(len(pos_users), weights.size(1), dtype=weights.dtype,
                            device=weights.device).exponential_(1)  # as multinomial draws it for all P rows
        row = (row_weights[0] / noise[second]).topk(num_negatives).indices
    elif mode == "shared_fast":
        row = exponential_race(row_weights, num_negatives)[0]
    else:
        raise ValueError(f"unknown ReFINe++ negative mode {mode!r}")
    return row.expand(len(pos_users), -1)


def shuffled_batches(num_examples: int, batch_size: int, device=None):
    """Index batches of a fresh permutation, drawn exactly as DataLoader(range(n), shuffle=True) draws it.

    Each DataLoader epoch takes two int64s from the global torch RNG: the iterator's worker base
    seed (unused without workers), then the seed of the private generator that permutes. Doing
    the same keeps every later global draw (the negatives) identical to the published run on a CPU,
    without DataLoader's per-batch Python collation. `device` is where the batches go.
    """
    torch.empty((), dtype=torch.int64).random_()  # the DataLoader iterator's base seed
    seed = int(torch.empty((), dtype=torch.int64).random_().item())
    permutation = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed))
    # One host-to-device copy per epoch instead of one per batch.
    return permutation.to(device).split(batch_size)


# --- One interface, three implementations -------------------------------------------------
#
# A sampler is built once per run; `base()` gives the weights of epochs before t, `refine(item_emb)`
# a fresh refined copy for one epoch. Both return a weights object whose `draw(users)` gives the
# negatives of each user (one item per user (U,) for ReFINe and LightGCN, J items (U, J) for
# ReFINe++) and whose `to_dense()` gives W (for tests and small cases). No draw reads a value back
# from the device: on a GPU the batch loop never waits for it.

# Below this many user-item entries (1 GiB as float32) `--sampler auto` keeps the dense published
# sampler: ML-100K, ML-1M and Netflix-1M stay draw-for-draw identical to the published code on a CPU
# (on a GPU: the same distribution).
AUTO_DENSE_MAX_ENTRIES = 1 << 28


class DenseWeights:
    """One epoch's dense W (num_users, num_items)."""

    def __init__(self, weights: torch.Tensor):
        check_weights(weights)
        self.weights = weights

    def draw(self, users: torch.Tensor) -> torch.Tensor:
        return draw_negatives(self.weights, users)

    def to_dense(self) -> torch.Tensor:
        return self.weights


class DenseNegativeSampler:
    """The published sampler: dense W, cloned and refined each epoch, torch.multinomial draws."""

    def __init__(self, num_users, num_items, train_pos, train_neg, real_neg_samp_prob, s, r, q, p):
        self.train_pos, self.train_neg = train_pos, train_neg
        self.s, self.r, self.q, self.p = s, r, q, p
        self.base_weights = DenseWeights(base_sampling_weights(num_users, num_items, train_pos, train_neg,
                                                               real_neg_samp_prob))

    def base(self) -> DenseWeights:
        return self.base_weights

    def refine(self, item_emb: torch.Tensor) -> DenseWeights:
        return DenseWeights(refine_weights_by_similarity(self.base_weights.weights, item_emb, self.train_pos,
                                                         self.train_neg, self.s, self.r, self.q, self.p))


def _last_per_key(keys: torch.Tensor, values: torch.Tensor):
    """Sorted unique keys, each with the value of its LAST occurrence (later writes win, as in W[idx] = v)."""
    keys, order = torch.sort(keys, stable=True)
    values = values[order]
    is_last = torch.ones_like(keys, dtype=torch.bool)
    is_last[:-1] = keys[1:] != keys[:-1]
    return keys[is_last], values[is_last]


def _merge_sorted(keys, values, new_keys, new_values):
    """Merge two sorted key lists with no key in common, without a full re-sort."""
    merged_keys = torch.empty(keys.numel() + new_keys.numel(), dtype=keys.dtype, device=keys.device)
    merged_values = torch.empty(merged_keys.numel(), dtype=values.dtype, device=values.device)
    old_slots = torch.arange(keys.numel(), device=keys.device) + torch.searchsorted(new_keys, keys)
    new_slots = torch.arange(new_keys.numel(), device=keys.device) + torch.searchsorted(keys, new_keys)
    merged_keys[old_slots], merged_values[old_slots] = keys, values
    merged_keys[new_slots], merged_values[new_slots] = new_keys, new_values
    return merged_keys, merged_values


class SparseWeights:
    """W = 1 except at sorted unique `keys` = user * num_items + item, where it is `values` (!= 1).

    draw(users) is exact: with n_u exceptions of total weight m_u, row u's mass is
    (num_items - n_u) + m_u. One uniform x in [0, mass) picks an exception by its cumulative
    weight when x < m_u, else the floor(x - m_u)-th item that is not an exception (all weight 1).
    """

    def __init__(self, num_users: int, num_items: int, keys: torch.Tensor, values: torch.Tensor,
                 generator: torch.Generator = None):
        device = keys.device
        self.num_users, self.num_items, self.generator = num_users, num_items, generator
        values = values.to(torch.float32)  # as the dense W stores them
        keep = values != 1.0  # a stored 1 equals the default: canonical form drops it
        self.keys, self.values = keys[keep], values[keep]
        users = torch.div(self.keys, num_items, rounding_mode="floor")
        items = self.keys - users * num_items
        row_start = torch.searchsorted(self.keys, torch.arange(num_users + 1, device=device) * num_items)
        exception_count = row_start[1:] - row_start[:-1]
        # Free items of a row (not exceptions): the k-th of them is k + #{exceptions e_m of the row,
        # m-th in order, with e_m - m <= k}; rank_keys holds e_m - m, offset per user to stay sorted.
        rank_in_row = torch.arange(self.keys.numel(), device=device) - row_start[users]
        self.rank_keys = users * (num_items + 1) + (items - rank_in_row)
        self.row_start = row_start
        self.free_count = num_items - exception_count
        # Exceptions that can be drawn (weight > 0), with per-row cumulative weights in float64.
        positive = self.values > 0
        self.draw_items = items[positive]
        draw_users = users[positive]
        cumulative = torch.cumsum(self.values[positive].double(), 0)
        self.draw_row_start = torch.searchsorted(draw_users, torch.arange(num_users + 1, device=device))
        cumulative_before = torch.cat([cumulative.new_zeros(1), cumulative])
        self.cumulative = cumulative
        self.row_offset = cumulative_before[self.draw_row_start[:-1]]
        self.exception_mass = cumulative_before[self.draw_row_start[1:]] - self.row_offset
        self.row_mass = self.free_count.double() + self.exception_mass
        self.has_empty_row = bool((self.row_mass <= 0).any())  # checked once, not per batch (a GPU sync)

    def draw(self, users: torch.Tensor) -> torch.Tensor:
        """One item per entry of users, with probability W[u, j] / sum(W[u, :])."""
        if self.has_empty_row and bool((self.row_mass[users] <= 0).any()):
            raise ValueError("a user's sampling weights are all zero (every item is a train positive)")
        x = torch.rand(users.numel(), dtype=torch.float64, device=users.device, generator=self.generator)
        x = x * self.row_mass[users]
        exception_mass = self.exception_mass[users]
        from_exceptions = x < exception_mass
        # Stage 1: an exception, by binary search on the global cumulative weights.
        target = self.row_offset[users] + x
        slot = torch.searchsorted(self.cumulative, target, right=True)
        # Float rounding at a row's end must not leave the row.
        last = (self.draw_row_start[users + 1] - 1).clamp(min=0)
        slot = torch.minimum(slot, last).clamp(max=max(self.draw_items.numel() - 1, 0))
        exception_item = self.draw_items[slot] if self.draw_items.numel() else torch.zeros_like(users)
        # Stage 2: the rank-th free item of the row.
        rank = (x - exception_mass).floor().long().clamp(min=0)
        rank = torch.minimum(rank, self.free_count[users] - 1).clamp(min=0)
        preceding = torch.searchsorted(self.rank_keys, users * (self.num_items + 1) + rank, right=True)
        free_item = rank + preceding - self.row_start[users]
        return torch.where(from_exceptions, exception_item, free_item)

    def to_dense(self) -> torch.Tensor:
        weights = torch.ones(self.num_users * self.num_items, device=self.keys.device)
        weights[self.keys] = self.values
        return weights.view(self.num_users, self.num_items)


class SparseNegativeSampler:
    """ReFINe's W without the dense matrix: 1 plus sparse exceptions; refinement edits the exceptions.

    The refinement follows the dense one rule for rule: q near positives first, then p near
    confirmed negatives, each only where the weight is still exactly 1 before that step writes.
    """

    def __init__(self, num_users, num_items, train_pos, train_neg, real_neg_samp_prob, s, r, q, p,
                 generator: torch.Generator = None):
        self.num_users, self.num_items, self.generator = num_users, num_items, generator
        self.train_pos, self.train_neg = train_pos, train_neg
        self.s, self.r, self.q, self.p = s, r, q, p
        keys = torch.cat([self._keys(train_pos[0], train_pos[1]), self._keys(train_neg[0], train_neg[1])])
        values = torch.cat([torch.zeros(train_pos.size(1), device=keys.device),
                            torch.full((train_neg.size(1),), float(real_neg_samp_prob), device=keys.device)])
        keys, values = _last_per_key(keys, values)  # negatives written after positives, as in the dense W
        self.base_weights = self._weights(keys, values)

    def _keys(self, users, items):
        return users.long() * self.num_items + items.long()

    def _weights(self, keys, values) -> SparseWeights:
        return SparseWeights(self.num_users, self.num_items, keys, values, self.generator)

    def base(self) -> SparseWeights:
        return self.base_weights

    def refine(self, item_emb: torch.Tensor) -> SparseWeights:
        keys, values = self.base_weights.keys, self.base_weights.values
        neighbours = most_similar_items(item_emb, max(self.s, self.r))
        for pairs, k, value in ((self.train_pos, self.s, self.q), (self.train_neg, self.r, self.p)):
            value = torch.tensor(value, dtype=torch.float32).item()  # compared as the dense float32 W
            if value == 1.0 or pairs.size(1) == 0:
                continue  # writing 1 where W is 1 changes nothing
            # Deduplicated first: repeated pairs write the same value, and sorted queries search fast.
            candidates = torch.unique(self._keys(pairs[0].repeat_interleave(k), neighbours[pairs[1], :k].reshape(-1)))
            # Stored keys are exactly the entries != 1: a candidate is "still 1" iff it is not stored.
            slot = torch.searchsorted(keys, candidates).clamp(max=max(keys.numel() - 1, 0))
            stored = keys[slot] == candidates if keys.numel() else torch.zeros_like(candidates, dtype=torch.bool)
            new_keys = candidates[~stored]
            keys, values = _merge_sorted(keys, values, new_keys, torch.full_like(new_keys, value, dtype=values.dtype))
        return self._weights(keys, values)


class MultiNegativeWeights:
    """ReFINe++'s W (num_users, num_items) with its draw of `num_negatives` items per positive without
    replacement (`mode`: shared, shared_fast or per_positive; see refine_plus_negatives)."""

    def __init__(self, weights: torch.Tensor, num_negatives: int, mode: str):
        if mode not in ("shared", "shared_fast", "per_positive"):
            raise ValueError(f"unknown ReFINe++ negative mode {mode!r}")
        check_weights(weights)
        self.weights, self.num_negatives, self.mode = weights, num_negatives, mode

    def draw(self, users: torch.Tensor) -> torch.Tensor:
        """(U, num_negatives) negatives for the batch's positive users (U,)."""
        return refine_plus_negatives(self.weights, users, self.num_negatives, self.mode)

    def to_dense(self) -> torch.Tensor:
        return self.weights


class RefinePlusNegativeSampler:
    """ReFINe++'s sampler: W is 1, then 0 at every graph edge (positives, confirmed negatives and the
    rest), then real_neg_samp_prob at confirmed negatives; it is never refined by similarity."""

    def __init__(self, num_users, num_items, graph_edges, train_neg, real_neg_samp_prob, num_negatives,
                 mode="shared"):
        self.base_weights = MultiNegativeWeights(
            base_sampling_weights(num_users, num_items, graph_edges, train_neg, real_neg_samp_prob),
            num_negatives, mode)

    def base(self) -> MultiNegativeWeights:
        return self.base_weights

    def refine(self, item_emb: torch.Tensor) -> MultiNegativeWeights:
        """ReFINe++ has no similarity step: W stays as built."""
        return self.base_weights


def build_negative_sampler(kind: str, num_users, num_items, train_pos, train_neg, real_neg_samp_prob,
                           s, r, q, p):
    """`kind` dense, sparse or auto (dense while num_users * num_items <= AUTO_DENSE_MAX_ENTRIES)."""
    if kind == "auto":
        kind = "dense" if num_users * num_items <= AUTO_DENSE_MAX_ENTRIES else "sparse"
    samplers = {"dense": DenseNegativeSampler, "sparse": SparseNegativeSampler}
    if kind not in samplers:
        raise ValueError(f"unknown sampler {kind!r} (use auto, dense or sparse)")
    return samplers[kind](num_users, num_items, train_pos, train_neg, real_neg_samp_prob, s, r, q, p)
