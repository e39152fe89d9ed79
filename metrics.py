"""Full-ranking evaluation: masked top-k over all items, precision / recall / NDCG@k (docs/method.md §4),
and a model's evaluation with them (ranked_items, evaluate).

    python -m pytest tests/test_metrics.py

Per user with at least one ground-truth item (users without one are left out of every mean):
precision@k = hits / k, recall@k = hits / |gt|, NDCG@k = DCG / IDCG with binary gains,
discount 1 / log2(rank + 1) and IDCG over min(|gt|, k) hits.
"""
import torch


def masked_topk(user_emb, item_emb, exclude_edges, k, batch_size=8192):
    """(num_users, k) item indices ranked by score, skipping each user's excluded items.

    exclude_edges (2, E) holds (user, item) pairs whose scores are set to -inf.
    One pass serves every k' <= k: the first k' columns are the top-k' list.
    """
    num_users = user_emb.size(0)
    order = torch.argsort(exclude_edges[0], stable=True)
    excluded_users, excluded_items = exclude_edges[0, order], exclude_edges[1, order]
    boundaries = torch.searchsorted(excluded_users, torch.arange(0, num_users + batch_size, batch_size,
                                                                device=excluded_users.device))
    topk_index = torch.empty(num_users, k, dtype=torch.long, device=user_emb.device)
    for batch, start in enumerate(range(0, num_users, batch_size)):
        end = min(start + batch_size, num_users)
        scores = user_emb[start:end] @ item_emb.t()  # (batch, num_items)
        lo, hi = boundaries[batch], boundaries[batch + 1]
        scores[excluded_users[lo:hi] - start, excluded_items[lo:hi]] = float("-inf")
        topk_index[start:end] = scores.topk(k, dim=1).indices
    return topk_index


def per_user_metrics(topk_index, gt_edges, num_items, ks):
    """(users (G,), [(precision (G,), recall (G,), ndcg (G,)) for k in ks]) of the G users with ground truth.

    topk_index (U, >= max(ks)) ranked item indices; gt_edges (2, E) ground-truth (user, item)
    pairs. A top-k entry is a hit when its key user * num_items + item is among the sorted
    ground-truth keys: O(E + U k) memory, no dense users x items matrix. Recall divides by the
    user's ground-truth edges (duplicates counted, as published); IDCG uses distinct items.
    """
    num_users = topk_index.size(0)
    keys = torch.unique(gt_edges[0] * num_items + gt_edges[1])  # distinct pairs, sorted
    users = torch.arange(num_users, device=topk_index.device).unsqueeze(1)
    hits = torch.isin(users * num_items + topk_index, keys)
    gt_count = torch.bincount(gt_edges[0], minlength=num_users)
    distinct_count = torch.bincount(torch.div(keys, num_items, rounding_mode="floor"), minlength=num_users)
    has_gt = gt_count > 0
    hits = hits[has_gt].float()  # (users with gt, max k)
    gt = gt_count[has_gt].float()
    discount = 1.0 / torch.log2(torch.arange(2, hits.size(1) + 2, device=hits.device, dtype=torch.float))
    ideal_len = distinct_count[has_gt]
    per_k = []
    for k in ks:
        hit_count = hits[:, :k].sum(dim=1)
        dcg = (hits[:, :k] * discount[:k]).sum(dim=1)
        ideal_hits = (torch.arange(k, device=hits.device) < ideal_len.unsqueeze(1)).float()
        idcg = (ideal_hits * discount[:k]).sum(dim=1)
        per_k.append((hit_count / k, hit_count / gt, dcg / idcg))
    return has_gt.nonzero().squeeze(1), per_k


def mean_over_users(per_k):
    """[(precision@k, recall@k, ndcg@k) as floats] from per_user_metrics' per-k tensors."""
    return [tuple(float(values.mean()) for values in metrics_k) for metrics_k in per_k]


def ranking_metrics(topk_index, gt_edges, num_items, ks):
    """[(precision@k, recall@k, ndcg@k) for k in ks], means over the users with ground truth."""
    return mean_over_users(per_user_metrics(topk_index, gt_edges, num_items, ks)[1])


@torch.no_grad()
def ranked_items(model, data, exclude_edges, k, batch_size):
    """(num_users, k) each user's top items by the model's score, exclude_edges (2, E) left out."""
    emb = model.propagate_embeddings()
    user_emb, item_emb = emb[:data.num_users], emb[data.num_users:]
    return masked_topk(user_emb, item_emb, exclude_edges, k, batch_size)


def evaluate(model, data, ground_truth, exclude_edges, ks, batch_size):
    """[(precision, recall, ndcg) for k in ks] of a full ranking against ground_truth (2, E)."""
    return ranking_metrics(ranked_items(model, data, exclude_edges, max(ks), batch_size), ground_truth,
                           data.num_items, ks)
