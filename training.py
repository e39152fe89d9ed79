"""One epoch of training for each model, and the model, negative sampler and epoch function of a run.

    python -m pytest tests/test_model.py tests/test_sampler.py    # main.py trains with these

The method is docs/method.md §3-6.
"""
import torch

import sampler
from model import LightGCN, ReFINePlus, bpr_loss
from utils import InputError


def train_refine_epoch(model, optimizer, data, negative_sampler, epoch, args):
    """ReFINe / LightGCN: one BPR pass over the shuffled train positives; the example-weighted mean loss."""
    num_users = data.num_users
    weights = negative_sampler.base()
    if args.model == "refine" and epoch >= args.t:
        with torch.no_grad():
            item_emb = model.propagate_embeddings()[num_users:]
        weights = negative_sampler.refine(item_emb)
    total_loss = torch.zeros((), dtype=torch.float64, device=data.train_pos.device)
    for index in sampler.shuffled_batches(data.train_pos.size(1), args.batch_size, data.train_pos.device):
        users, pos_items = data.train_pos[:, index]
        neg_items = weights.draw(users)
        edge_label_index = torch.stack([torch.cat([users, users]),
                                        torch.cat([pos_items, neg_items]) + num_users])
        optimizer.zero_grad()
        pos_score, neg_score = model.score_pairs(edge_label_index).chunk(2)
        loss = bpr_loss(pos_score, neg_score, model.embedding.weight, edge_label_index.unique())
        loss.backward()
        optimizer.step()
        total_loss += loss.detach().double() * pos_score.numel()  # float64, as float(loss) sums upstream
    return float(total_loss) / data.train_pos.size(1)


def train_refine_plus_epoch(model, optimizer, data, base_weights, epoch, args):
    """ReFINe++: batches of all graph edges (positives and confirmed negatives); per positive,
    I // 10 negatives drawn without replacement; the mean loss weighted by positives per batch."""
    num_negatives = data.num_items // 10
    device = base_weights.device
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_positives = 0
    for index in sampler.shuffled_batches(data.graph_edges.size(1), args.batch_size, device):
        users, items = data.graph_edges[:, index]
        positive = data.graph_ratings[index] >= 4
        pos_users, pos_items = users[positive], items[positive]
        if pos_users.numel() == 0:
            continue
        neg_items = sampler.refine_plus_negatives(base_weights, pos_users, num_negatives,
                                                  args.refine_plus_negatives)  # (P, J)
        optimizer.zero_grad()
        loss = model.loss(pos_users, pos_items, neg_items, torch.stack([users[~positive], items[~positive]]))
        loss.backward()
        optimizer.step()
        total_loss += loss.detach().double() * pos_users.numel()
        total_positives += pos_users.numel()
    return float(total_loss) / max(total_positives, 1)


def build_model(args, data):
    """(model, negatives, epoch function) for --model; negatives: the --sampler for ReFINe and LightGCN,
    the dense sampling weights W (num_users, num_items) for ReFINe++."""
    num_nodes = data.num_users + data.num_items
    if args.model == "refine_plus":
        if args.sampler == "sparse":
            raise InputError("--sampler sparse: ReFINe++ draws negatives without replacement from the dense W only")
        model = ReFINePlus(data.num_users, data.num_items, args.embedding_dim, args.layers,
                           data.graph_edge_index())
        # W: 0 at every graph edge (positives and negatives), then 1.5 at confirmed negatives.
        weights = sampler.base_sampling_weights(data.num_users, data.num_items, data.graph_edges,
                                                data.train_neg, args.real_neg_samp_prob)
        return model, weights, train_refine_plus_epoch
    model = LightGCN(num_nodes, args.embedding_dim, args.layers, data.graph_edge_index())
    # Plain LightGCN draws uniformly over non-positives: confirmed negatives keep weight 1.
    negative_weight = args.real_neg_samp_prob if args.model == "refine" else 1.0
    negative_sampler = sampler.build_negative_sampler(args.sampler, data.num_users, data.num_items, data.train_pos,
                                                      data.train_neg, negative_weight,
                                                      s=args.s, r=args.r, q=args.q, p=args.p)
    return model, negative_sampler, train_refine_epoch
