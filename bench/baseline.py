"""The published ReFINe training design, written plainly: the baseline of bench_epoch.py.

    python -m bench.bench_epoch --data_dir dataset --dataset ML-100K   # times it against ours

What it does, as the published main.py does (facts from that code; this is our own code):
- torch_geometric's LightGCN called on edge_index for every batch, so each of the K LGConv
  layers recomputes gcn_norm in every forward pass;
- a dense users x items weight matrix, cloned every epoch; from epoch t the full item-item
  score matrix, one topk for s and another for r;
- torch.multinomial on the dense rows of the batch's users, float(loss) after every batch;
- evaluation ranks every user once PER k, building dense ground-truth and masks per user batch.
"""
import torch
import torch_geometric.nn
from torch_geometric.utils import degree


class PublishedDesign:
    """Model, optimiser and sampling weights of one published-style run on a RecData."""

    def __init__(self, data, embedding_dim=64, num_layers=4, learning_rate=1e-3, real_neg_samp_prob=1.5,
                 s=5, r=100, q=0.75, p=1.5, batch_size=1024, test_batch_size=8192):
        self.data, self.num_users, self.num_items = data, data.num_users, data.num_items
        self.s, self.r, self.q, self.p = s, r, q, p
        self.batch_size, self.test_batch_size = batch_size, test_batch_size
        self.edge_index = data.graph_edge_index()
        self.model = torch_geometric.nn.LightGCN(data.num_users + data.num_items, embedding_dim,
                                                 num_layers).to(self.edge_index.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
        self.weights = torch.ones(data.num_users, data.num_items, device=self.edge_index.device)
        self.weights[data.train_pos[0], data.train_pos[1]] = 0.0
        self.weights[data.train_neg[0], data.train_neg[1]] = real_neg_samp_prob

    def epoch_weights(self, refine: bool) -> torch.Tensor:
        """The epoch's clone of W, refined by item-item similarity when `refine` (epoch >= t)."""
        weights = self.weights.clone()
        if refine:
            with torch.no_grad():
                item_emb = self.model.get_embedding(self.edge_index)[self.num_users:]
            item_item = item_emb @ item_emb.t()
            item_item.fill_diagonal_(float("-inf"))
            for pairs, k, value in ((self.data.train_pos, self.s, self.q), (self.data.train_neg, self.r, self.p)):
                top = torch.topk(item_item, k=k, dim=1).indices
                users = pairs[0].repeat_interleave(k)
                items = top[pairs[1]].view(-1)
                still_one = weights[users, items] == 1.0
                weights[users[still_one], items[still_one]] = value
        return weights

    def train_batches(self, weights: torch.Tensor) -> float:
        """One pass over shuffled train positives (DataLoader order), published loop."""
        train_pos = self.data.train_pos
        loader = torch.utils.data.DataLoader(range(train_pos.size(1)), shuffle=True, batch_size=self.batch_size)
        total_loss = total_examples = 0
        for index in loader:
            users, pos_items = train_pos[:, index.to(train_pos.device)]
            neg_items = torch.multinomial(weights[users], num_samples=1).squeeze(1)
            edge_label_index = torch.stack([torch.cat([users, users]),
                                            torch.cat([pos_items, neg_items]) + self.num_users])
            self.optimizer.zero_grad()
            pos_rank, neg_rank = self.model(self.edge_index, edge_label_index).chunk(2)
            loss = self.model.recommendation_loss(pos_rank, neg_rank, node_id=edge_label_index.unique())
            loss.backward()
            self.optimizer.step()
            total_loss += float(loss) * pos_rank.numel()
            total_examples += pos_rank.numel()
        return total_loss / total_examples

    @torch.no_grad()
    def evaluate(self, ground_truth, ks):
        """[(precision, recall, ndcg) for k in ks], the whole ranking redone for every k."""
        emb = self.model.get_embedding(self.edge_index)
        return published_metrics(emb[:self.num_users], emb[self.num_users:],
                                 [self.data.train_pos, self.data.train_neg, self.data.train_neutral],
                                 ground_truth, ks, self.test_batch_size)


def published_metrics(user_emb, item_emb, exclude_sets, ground_truth, ks, test_batch_size=8192):
    """Per-k full ranking with dense per-batch ground truth, as the published test(); (2, E) user-item pairs."""
    num_users = user_emb.size(0)
    results = []
    for k in ks:
        precision = recall = ndcg = total_examples = 0
        for start in range(0, num_users, test_batch_size):
            end = start + test_batch_size
            logits = user_emb[start:end] @ item_emb.t()
            for pairs in exclude_sets:
                in_batch = (pairs[0] >= start) & (pairs[0] < end)
                logits[pairs[0, in_batch] - start, pairs[1, in_batch]] = float("-inf")
            truth = torch.zeros_like(logits, dtype=torch.bool)
            in_batch = (ground_truth[0] >= start) & (ground_truth[0] < end)
            truth[ground_truth[0, in_batch] - start, ground_truth[1, in_batch]] = True
            node_count = degree(ground_truth[0, in_batch] - start, num_nodes=logits.size(0))
            topk_index = logits.topk(k, dim=-1).indices
            isin = truth.gather(1, topk_index)
            precision += float((isin.sum(dim=-1) / k).sum())
            recall += float((isin.sum(dim=-1) / node_count.clamp(1e-6)).sum())
            relevance = truth.float()
            ideal = relevance.sort(dim=1, descending=True).values[:, :k]
            log2_k = torch.log2(torch.arange(2, k + 2, device=logits.device, dtype=torch.float))
            dcg = (relevance.gather(1, topk_index) / log2_k).sum(dim=1)
            idcg = (ideal / log2_k).sum(dim=1)
            ndcg += float((dcg / idcg.clamp(1e-6)).sum())
            total_examples += int((node_count > 0).sum())
        results.append((precision / total_examples, recall / total_examples, ndcg / total_examples))
    return results
