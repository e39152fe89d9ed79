"""One epoch of training for each model, and the model, negative sampler and epoch function of a run,
all configured by a TrainConfig (the training flags, typed).

    python -m pytest tests/test_perf.py -k "sync or epoch"    # these epochs, their host reads counted

The method is docs/method.md §3-6. Neither epoch function waits for the GPU inside its batch loop
except where a size must be known (ReFINe++: once per batch, in ReFINePlus.loss); the loss is summed
on the device and read once per epoch.
"""
from dataclasses import dataclass, fields

import torch

import sampler
from model import LightGCN, ReFINePlus, bpr_loss
from utils import InputError


@dataclass(frozen=True)
class TrainConfig:
    """What the model, its negative sampler and an epoch need of main.py's flags (docs/training.md):
    main.py builds it once from the flags, bench and tests directly. The defaults are the published
    flags' (a test holds them to main.py's parser)."""

    model: str = "refine"                   # refine | lightgcn | refine_plus
    sampler: str = "auto"                   # auto | dense | sparse (ReFINe and LightGCN)
    refine_plus_negatives: str = "shared"   # shared | shared_fast | per_positive (ReFINe++)
    batch_size: int = 1024
    embedding_dim: int = 64
    layers: int = 4
    learning_rate: float = 0.001
    real_neg_samp_prob: float = 1.5         # the sampling weight of confirmed negatives
    p: float = 1.5                          # ReFINe: weight of items similar to a confirmed negative
    q: float = 0.75                         # ReFINe: weight of items similar to a positive
    r: int = 100                            # ReFINe: similar items per confirmed negative
    s: int = 5                              # ReFINe: similar items per positive
    t: float = 50                           # ReFINe: first epoch of the similarity step (inf: never)

    @classmethod
    def from_flags(cls, args) -> "TrainConfig":
        """The configuration of main.py's parsed flags."""
        return cls(**{field.name: getattr(args, field.name) for field in fields(cls)})


def train_bpr_epoch(model, optimizer, data, negative_sampler, epoch, config: TrainConfig):
    """ReFINe and LightGCN: one BPR pass over the shuffled train positives, one drawn negative each;
    the example-weighted mean loss. ReFINe refines W by item similarity from epoch t on."""
    num_users = data.num_users
    weights = negative_sampler.base()
    if config.model == "refine" and epoch >= config.t:
        with torch.no_grad():
            item_emb = model.propagate_embeddings()[num_users:]
        weights = negative_sampler.refine(item_emb)
    total_loss = torch.zeros((), dtype=torch.float64, device=data.train_pos.device)
    for index in sampler.shuffled_batches(data.train_pos.size(1), config.batch_size, data.train_pos.device):
        users, pos_items = data.train_pos[:, index]
        neg_items = weights.draw(users)
        edge_label_index = torch.stack([torch.cat([users, users]),
                                        torch.cat([pos_items, neg_items]) + num_users])
        optimizer.zero_grad()
        pos_score, neg_score = model.score_pairs(edge_label_index).chunk(2)
        loss = bpr_loss(pos_score, neg_score, model.embedding.weight, edge_label_index)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach().double() * pos_score.numel()  # float64, as float(loss) sums upstream
    return float(total_loss) / data.train_pos.size(1)


def positives_first(batches, is_positive):
    """(the epoch's edge order, positives per batch): each batch's edges reordered positives first,
    both kinds in their order in the batch (as boolean masks pick them), and how many positives each
    batch has, read from the device once per epoch instead of once per batch."""
    order = torch.cat(batches)
    batch_of = torch.arange(order.numel(), device=order.device) // len(batches[0])  # all but the last are full
    positive = is_positive[order]
    order = order[torch.sort(batch_of * 2 + (~positive), stable=True).indices]
    counts = torch.zeros(len(batches), dtype=torch.long, device=order.device).index_add_(0, batch_of, positive.long())
    return order, counts.tolist()


def train_refine_plus_epoch(model, optimizer, data, negative_sampler, epoch, config: TrainConfig):
    """ReFINe++: batches of all graph edges (positives and confirmed negatives); per positive,
    I // 10 negatives drawn without replacement; the mean loss weighted by positives per batch."""
    weights = negative_sampler.base()
    device = data.graph_edges.device
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_positives = 0
    batches = sampler.shuffled_batches(data.graph_edges.size(1), config.batch_size, device)
    order, positives = positives_first(batches, data.graph_ratings >= 4)
    start = 0
    for batch, num_positives in zip(batches, positives):
        pos_index, neg_index = order[start:start + num_positives], order[start + num_positives:start + len(batch)]
        start += len(batch)
        if num_positives == 0:
            continue
        pos_users, pos_items = data.graph_edges[:, pos_index]
        neg_items = weights.draw(pos_users)  # (P, J)
        optimizer.zero_grad()
        loss = model.loss(pos_users, pos_items, neg_items, data.graph_edges[:, neg_index])
        loss.backward()
        optimizer.step()
        total_loss += loss.detach().double() * num_positives
        total_positives += num_positives
    return float(total_loss) / max(total_positives, 1)


def build_model(config: TrainConfig, data):
    """(model, negative sampler, epoch function) for --model: the --sampler with BPR for ReFINe and
    LightGCN, ReFINe++'s own sampler (the dense W, several negatives per positive) for ReFINe++."""
    num_nodes = data.num_users + data.num_items
    if config.model == "refine_plus":
        if config.sampler == "sparse":
            raise InputError("--sampler sparse: ReFINe++ draws negatives without replacement from the dense W only")
        model = ReFINePlus(data.num_users, data.num_items, config.embedding_dim, config.layers,
                           data.graph_edge_index())
        # W: 0 at every graph edge (positives and negatives), then 1.5 at confirmed negatives.
        negative_sampler = sampler.RefinePlusNegativeSampler(data.num_users, data.num_items, data.graph_edges,
                                                             data.train_neg, config.real_neg_samp_prob,
                                                             data.num_items // 10, config.refine_plus_negatives)
        return model, negative_sampler, train_refine_plus_epoch
    model = LightGCN(num_nodes, config.embedding_dim, config.layers, data.graph_edge_index())
    # Plain LightGCN draws uniformly over non-positives: confirmed negatives keep weight 1.
    negative_weight = config.real_neg_samp_prob if config.model == "refine" else 1.0
    negative_sampler = sampler.build_negative_sampler(config.sampler, data.num_users, data.num_items, data.train_pos,
                                                      data.train_neg, negative_weight,
                                                      s=config.s, r=config.r, q=config.q, p=config.p)
    return model, negative_sampler, train_bpr_epoch
