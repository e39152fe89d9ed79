"""Train and evaluate ReFINe (LightGCN + BPR with LLM-refined negative sampling), or ReFINe++ / LightGCN.

    python main.py --dataset ML-100K --r 100 > results4comparison/ReFINe_ML-100K.out
    python main.py --dataset ML-100K --model refine_plus --flush_denormal

Command-compatible with the published script: same flags, defaults and log lines, so `diff`
against the published log shows only number differences. The method is ../shared/SPEC.md
sections 3-5; the deviations from the published code are listed in README.md.
"""
import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import dataloader
import metrics
import sampler
from model import LightGCN, ReFINePlus, bpr_loss
from utils import EarlyStopping, InputError, atomic_write, format_metrics, metrics_by_k, set_seed

RULE = "#" * 77


def dataset_augment(value: str) -> int:
    """--dataset_augment accepts 1/0 (published) and augment/original."""
    choices = {"1": 1, "augment": 1, "0": 0, "original": 0}
    if value.lower() not in choices:
        raise argparse.ArgumentTypeError(f"expected 1, 0, augment or original, got {value!r}")
    return choices[value.lower()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # The published flags: same names, defaults and order.
    parser.add_argument("--random_seed", type=int, default=2024)
    parser.add_argument("--gpu_id", type=int, default=4)
    parser.add_argument("--dataset", type=str, default="ML-100K")
    parser.add_argument("--dataset_augment", type=dataset_augment, default=1,
                        help="1/augment: train on <NAME>_train_augment.csv; 0/original: _train_original.csv")
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--test_batch_size", type=int, default=8192)
    parser.add_argument("--embedding_dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=0.001)
    parser.add_argument("--evaluation_step", type=int, default=1)
    parser.add_argument("--early_stopping_step", type=int, default=50)
    # Upstream declares type=list, which turns `--top_k 20` into ['2', '0']; integers here.
    parser.add_argument("--top_k", type=int, nargs="+", default=[5, 10, 15, 20])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--real_neg_samp_prob", type=float, default=1.5,
                        help="real_negative_sampling_probabilities")
    parser.add_argument("--p", type=float, default=1.5)
    parser.add_argument("--q", type=float, default=0.75)
    parser.add_argument("--r", type=int, default=100)
    parser.add_argument("--s", type=int, default=5)
    parser.add_argument("--t", type=int, default=50)
    parser.add_argument("--path_name", type=str, default="nothing")

    extras = parser.add_argument_group("reproduction extras")
    extras.add_argument("--model", choices=["refine", "refine_plus", "lightgcn"], default="refine",
                        help="refine: ReFINe; refine_plus: ReFINe++; lightgcn: uniform negatives over non-positives")
    extras.add_argument("--refine_plus_negatives", choices=["shared", "per_positive"], default="shared",
                        help="ReFINe++ only. shared (published): every positive of a batch uses the negatives "
                             "drawn for the batch's second positive; per_positive: each uses its own")
    extras.add_argument("--data_dir", type=str, default=os.environ.get("REFINE_DATA_DIR", "dataset"),
                        help="folder holding <NAME>/<NAME>_*.csv (default: $REFINE_DATA_DIR or ./dataset)")
    extras.add_argument("--device", type=str, default="auto",
                        help="auto (cuda:<gpu_id> when a GPU exists, else cpu), cpu, cuda or cuda:N")
    extras.add_argument("--eval_protocol", choices=["faithful", "strict"], default="faithful",
                        help="strict also masks validation items when testing (published: not masked)")
    extras.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from result/<dataset>/<path_name>.last.pt")
    extras.add_argument("--flush_denormal", action="store_true",
                        help="CPU: flush denormal floats (< 1.2e-38) to zero; ReFINe++ epochs run 3x faster "
                             "once its weights reach that range (off: computed as published)")
    extras.add_argument("--sampler", choices=["auto", "dense", "sparse"], default="auto",
                        help="negative sampler: dense (published, draw-for-draw), sparse (no users x items "
                             "matrix, same distribution), auto (dense up to 2**28 user-item pairs); "
                             "ReFINe++ is always dense")
    extras.add_argument("--duplicate_pairs", choices=["error", "first", "last"], default="error",
                        help="split rows that repeat a (user, item) pair (e.g. a positive and a confirmed "
                             "negative): error refuses them with their line numbers; first / last keeps the "
                             "pair's first / last row (docs/bad-input.md)")
    return parser


def print_config(args) -> None:
    """The published header (its key spellings included), then the extra flags.

    ReFINe++'s published header has no p, q, r, s, t and spells dataset_augment as a word.
    """
    refine_plus = args.model == "refine_plus"
    augment = ("augment" if args.dataset_augment else "original") if refine_plus else args.dataset_augment
    published = [("ramdom_seed", args.random_seed), ("gpu_id", args.gpu_id), ("dataset", args.dataset),
                 ("dataset_augment", augment), ("batch_size", args.batch_size),
                 ("test_batch_size", args.test_batch_size), ("embedding_dim", args.embedding_dim),
                 ("layers", args.layers), ("learning_rate", args.learning_rate),
                 ("evaluation_step", args.evaluation_step), ("early_stopping_step", args.early_stopping_step),
                 ("top_k", args.top_k), ("epochs", args.epochs),
                 ("real_negative_sampling_probabilities", args.real_neg_samp_prob)]
    if not refine_plus:
        published += [("p", args.p), ("q", args.q), ("r", args.r), ("s", args.s), ("t", args.t)]
    published.append(("path_name", args.path_name))
    extras = [("data_dir", args.data_dir), ("device", args.device), ("eval_protocol", args.eval_protocol),
              ("sampler", args.sampler), ("model", args.model)]
    if args.flush_denormal:
        extras.append(("flush_denormal", True))
    if refine_plus:
        extras.append(("refine_plus_negatives", args.refine_plus_negatives))
    print(RULE)
    for key, value in published + extras:
        print(f"{key}: {value}")
    print(RULE + "\n")


def resolve_device(name: str, gpu_id: int) -> torch.device:
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # The published default --gpu_id 4 names a GPU most machines lack: fall back to cuda:0.
        return torch.device(f"cuda:{gpu_id}" if gpu_id < torch.cuda.device_count() else "cuda:0")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: unknown device (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name}: unsupported device type (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA GPU is available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) present")
    return device


def check_args(args, data) -> None:
    """Flag values that would fail deep inside torch get a clear error here instead."""
    if max(args.top_k) > data.num_items:
        raise InputError(f"--top_k {max(args.top_k)} is larger than the item count ({data.num_items})")
    if min(args.top_k) < 1:
        raise InputError(f"--top_k values must be positive, got {min(args.top_k)}")
    for flag in ("r", "s"):
        value = getattr(args, flag)
        if not 0 < value < data.num_items:
            raise InputError(f"--{flag} {value} must be between 1 and the item count - 1 ({data.num_items - 1})")
    for flag in ("batch_size", "test_batch_size", "evaluation_step", "epochs", "layers", "embedding_dim"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag} must be positive, got {getattr(args, flag)}")


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
        if args.refine_plus_negatives == "shared":
            # Published quirk: the negatives drawn for the batch's second positive serve every positive.
            # Upstream draws a row per positive and keeps row 1; drawing row 1 alone has the same
            # distribution at a fraction of the cost (a third of the epoch here).
            second = pos_users[min(1, len(pos_users) - 1)]
            neg_items = torch.multinomial(base_weights[second], num_negatives, replacement=False)
            neg_items = neg_items.expand(len(pos_users), -1)  # (P, J)
        else:
            neg_items = torch.multinomial(base_weights[pos_users], num_negatives, replacement=False)  # (P, J)
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
        candidates = int((weights > 0).sum(dim=1).min())
        if not 1 <= data.num_items // 10 <= candidates:
            raise InputError(f"ReFINe++ draws item count // 10 = {data.num_items // 10} negatives per positive "
                             f"without replacement, but a user has only {candidates} items outside the graph")
        return model, weights, train_refine_plus_epoch
    model = LightGCN(num_nodes, args.embedding_dim, args.layers, data.graph_edge_index())
    # Plain LightGCN draws uniformly over non-positives: confirmed negatives keep weight 1.
    negative_weight = args.real_neg_samp_prob if args.model == "refine" else 1.0
    negative_sampler = sampler.build_negative_sampler(args.sampler, data.num_users, data.num_items, data.train_pos,
                                                      data.train_neg, negative_weight,
                                                      s=args.s, r=args.r, q=args.q, p=args.p)
    return model, negative_sampler, train_refine_epoch


@torch.no_grad()
def evaluate(model, data, ground_truth, exclude_edges, args):
    """[(precision, recall, ndcg) for k in top_k] of a full ranking against ground_truth (2, E)."""
    emb = model.propagate_embeddings()
    user_emb, item_emb = emb[:data.num_users], emb[data.num_users:]
    topk_index = metrics.masked_topk(user_emb, item_emb, exclude_edges, max(args.top_k), args.test_batch_size)
    return metrics.ranking_metrics(topk_index, ground_truth, data.num_items, args.top_k)


def save_torch(obj, path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Flags that must match for --resume to continue the same run.
RUN_IDENTITY = ("model", "refine_plus_negatives", "sampler", "random_seed", "dataset", "dataset_augment", "batch_size", "embedding_dim", "layers",
                "learning_rate", "evaluation_step", "early_stopping_step", "top_k", "real_neg_samp_prob",
                "p", "q", "r", "s", "t", "data_dir")


def load_resume_state(path: Path, args) -> dict:
    if not path.is_file():
        raise InputError(f"--resume: no saved training state at {path}")
    state = torch.load(path, weights_only=False)
    changed = [flag for flag in RUN_IDENTITY if state["args"].get(flag) != getattr(args, flag)]
    if changed:
        raise InputError(f"--resume: {path} was saved with other values of --{', --'.join(changed)}")
    return state


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    set_seed(args.random_seed)
    torch.set_flush_denormal(args.flush_denormal)
    device = resolve_device(args.device, args.gpu_id)
    print_config(args)

    print(RULE)
    print("data loading...")
    print("train set: train_augment" if args.dataset_augment else "train set: train_original")
    data = dataloader.load_splits(args.data_dir, args.dataset, bool(args.dataset_augment),
                                  encode_negatives=args.model == "refine_plus", duplicate_pairs=args.duplicate_pairs)
    check_args(args, data)
    print(f"user: {data.num_users},  item: {data.num_items}")
    print(f"train interations: {data.graph_edges.size(1)}")
    print(f"valid interations: {data.valid.size(1)}")
    print(f"test interations: {data.test.size(1)}")
    print("done!")
    print(RULE)
    data = data.to(device)

    model, negatives, train_one_epoch = build_model(args, data)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    train_interactions = data.train_interactions()

    result_dir = Path("result") / args.dataset
    checkpoint_path = result_dir / f"{args.path_name}.pt"
    state_path = result_dir / f"{args.path_name}.last.pt"
    metrics_path = result_dir / f"{args.path_name}.metrics.jsonl"
    early_stopping = EarlyStopping(patience=args.early_stopping_step)
    history, first_epoch, elapsed = [], 1, 0.0
    if args.resume:
        state = load_resume_state(state_path, args)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        early_stopping.load_state_dict(state["early_stopping"])
        history, first_epoch, elapsed = state["history"], state["epoch"] + 1, state["elapsed"]
        set_rng_state(state["rng"])
        for record in history:  # the log reads as if the run had never stopped
            print(record["log"])
        print(f"resumed after epoch {state['epoch']} from {state_path}", file=sys.stderr)

    start_time = time.time() - elapsed
    epoch = first_epoch - 1
    try:
        for epoch in tqdm(range(first_epoch, args.epochs + 1), initial=first_epoch - 1, total=args.epochs,
                          desc="epochs", unit="epoch", file=sys.stderr, disable=None):
            if early_stopping.early_stop:
                break
            model.train()
            loss = train_one_epoch(model, optimizer, data, negatives, epoch, args)
            if epoch % args.evaluation_step == 0:
                results = evaluate(model, data, data.valid, train_interactions, args)
                lines = [f"\nEpoch: {epoch:03d}, Loss: {loss:.4f}", format_metrics(args.top_k, results)]
                if early_stopping.update(epoch, results[-1][1], results):
                    save_torch(model.state_dict(), checkpoint_path)
                    lines.append(f"Save: {checkpoint_path}")
                else:
                    lines.append(f"EarlyStopping counter: {early_stopping.counter} out of {early_stopping.patience}")
                print("\n".join(lines), flush=True)
                history.append({"epoch": epoch, "loss": loss, "log": "\n".join(lines),
                                "validation": metrics_by_k(args.top_k, results)})
                with atomic_write(metrics_path) as handle:
                    handle.writelines(json.dumps({key: value for key, value in record.items() if key != "log"})
                                      + "\n" for record in history)
            save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                        "early_stopping": early_stopping.state_dict(), "history": history,
                        "elapsed": time.time() - start_time, "rng": rng_state(), "args": vars(args)},
                       state_path)
    except KeyboardInterrupt:
        raise InputError(f"interrupted during epoch {epoch}; rerun the same command with --resume "
                         f"to continue from {state_path}") from None

    if early_stopping.early_stop:
        print(f"\nEarly stopping at epoch {early_stopping.best_epoch}. Best Validation Results:")
        print(format_metrics(args.top_k, early_stopping.best_metrics))
    print(f"\nTraining completed in {time.time() - start_time} seconds.")
    if not early_stopping.early_stop:
        # Published: save the last model, print this line and stop without a test result.
        save_torch(model.state_dict(), Path("result") / f"{args.dataset}_not_early_stop.pt")
        print("Early stopping does not trigger.")
        if early_stopping.best_epoch is None:
            return 0
        print(f"Testing the best checkpoint (epoch {early_stopping.best_epoch}); "
              f"the published script prints no test result here.")

    model.load_state_dict(torch.load(checkpoint_path, weights_only=True))
    model.eval()
    exclude = train_interactions
    if args.eval_protocol == "strict":
        exclude = torch.cat([train_interactions, data.valid], dim=1)
    results = evaluate(model, data, data.test, exclude, args)
    print("\n" + RULE)
    print("Final Test Results")
    print(format_metrics(args.top_k, results))
    print(RULE)
    with atomic_write(result_dir / f"{args.path_name}.test.json") as handle:
        json.dump({"best_epoch": early_stopping.best_epoch, "eval_protocol": args.eval_protocol,
                   "test": metrics_by_k(args.top_k, results)}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
