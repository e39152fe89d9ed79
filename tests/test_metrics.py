"""Ranking metrics against a hand-computed example and a naive per-user loop."""
import math

import pytest
import torch

import metrics


def test_hand_computed_three_users():
    # 3 users, 5 items. Top-3 lists and ground truth:
    #   user 0: ranks [0, 1, 2], gt {0, 2}      -> hits at ranks 1 and 3
    #   user 1: ranks [3, 4, 0], gt {1}         -> no hit
    #   user 2: ranks [1, 2, 3], gt {}          -> left out of every mean
    # @1: user0 P=1, R=1/2, NDCG=1/1;                  user1 P=0 R=0 NDCG=0
    # @3: user0 P=2/3, R=1, DCG=1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3);  user1 zeros
    topk_index = torch.tensor([[0, 1, 2], [3, 4, 0], [1, 2, 3]])
    gt_edges = torch.tensor([[0, 0, 1], [0, 2, 1]])
    (p1, r1, n1), (p3, r3, n3) = metrics.ranking_metrics(topk_index, gt_edges, 5, [1, 3])
    assert p1 == pytest.approx(0.5) and r1 == pytest.approx(0.25) and n1 == pytest.approx(0.5)
    assert p3 == pytest.approx((2 / 3) / 2)
    assert r3 == pytest.approx(0.5)
    assert n3 == pytest.approx((1.5 / (1 + 1 / math.log2(3))) / 2)


def naive_metrics(scores, exclude, gt, ks):
    """Published-style: per user, per k, Python lists; users without ground truth skipped."""
    out = []
    for k in ks:
        sums, count = [0.0, 0.0, 0.0], 0
        for user in range(scores.size(0)):
            if not gt[user]:
                continue
            row = scores[user].clone()
            row[list(exclude[user])] = float("-inf")
            ranked = row.topk(k).indices.tolist()
            hits = [1.0 if item in gt[user] else 0.0 for item in ranked]
            dcg = sum(h / math.log2(rank + 2) for rank, h in enumerate(hits))
            idcg = sum(1 / math.log2(rank + 2) for rank in range(min(len(gt[user]), k)))
            sums[0] += sum(hits) / k
            sums[1] += sum(hits) / len(gt[user])
            sums[2] += dcg / idcg
            count += 1
        out.append(tuple(value / count for value in sums))
    return out


@pytest.mark.parametrize("batch_size", [3, 7, 100])
def test_vectorised_equals_naive_loop(batch_size):
    generator = torch.Generator().manual_seed(0)
    num_users, num_items, dim = 20, 30, 8
    user_emb = torch.randn(num_users, dim, generator=generator)
    item_emb = torch.randn(num_items, dim, generator=generator)
    exclude = {u: set(torch.randperm(num_items, generator=generator)[:5].tolist()) for u in range(num_users)}
    gt = {u: set() if u % 4 == 0 else set(torch.randperm(num_items, generator=generator)[:3].tolist()) - exclude[u]
          for u in range(num_users)}
    exclude_edges = torch.tensor([(u, i) for u in exclude for i in exclude[u]]).t()
    gt_edges = torch.tensor([(u, i) for u in gt for i in gt[u]]).t()
    ks = [1, 3, 5, 10]

    topk_index = metrics.masked_topk(user_emb, item_emb, exclude_edges, max(ks), batch_size=batch_size)
    got = metrics.ranking_metrics(topk_index, gt_edges, num_items, ks)
    expected = naive_metrics(user_emb @ item_emb.t(), exclude, gt, ks)
    for got_k, expected_k in zip(got, expected):
        assert got_k == pytest.approx(expected_k, abs=1e-6)
    # Excluded items never appear in a top-k list.
    for user in range(num_users):
        assert not set(topk_index[user].tolist()) & exclude[user]
