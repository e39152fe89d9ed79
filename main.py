"""Train and evaluate ReFINe (LightGCN + BPR with LLM-refined negative sampling), or ReFINe++ / LightGCN.

    python main.py --dataset ML-100K --r 100 > results4comparison/ReFINe_ML-100K.out
    python main.py --dataset ML-100K --model refine_plus --flush_denormal --path_name plus
    python main.py --help        # every flag, the outputs (result/<dataset>/<path_name>.*)

Command-compatible with the published script: same flags, defaults and log lines, so `diff`
against the published log shows only number differences. The log also goes to
result/<dataset>/<path_name>.out; flags and outputs are described in docs/training.md. The method is ../shared/SPEC.md
sections 3-5; the deviations from the published code are listed in README.md.
"""
if __name__ == "__main__":
    # Parse and check the flags before the slow imports below (torch, torch_geometric, pandas):
    # --help and a bad flag value then answer in a fraction of a second.
    import cli
    cli.parse_before_imports()

import contextlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import cli
import dataloader
import metrics
from cli import build_parser, check_flags
from data_prep import missing_split_message, sha256_of, split_path
from training import build_model
from utils import (EarlyStopping, InputError, RunLog, atomic_write, check_output_path, format_metrics,
                   metrics_by_k, set_seed)

RULE = "#" * 77


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
    if args.result_dir:
        extras.append(("result_dir", args.result_dir))
    if args.flush_denormal:
        extras.append(("flush_denormal", True))
    if args.threads is not None:
        extras.append(("threads", args.threads))
    if args.duplicate_pairs != "error":
        extras.append(("duplicate_pairs", args.duplicate_pairs))
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


def train_split_path(args) -> Path:
    return split_path(args.data_dir, args.dataset, "train_augment" if args.dataset_augment else "train_original")


def negative_candidate_counts(data) -> torch.Tensor:
    """(num_users,) items each user can be given as a negative, those with W[u, j] > 0: every item
    but the user's train positives, except positives that are also confirmed negatives (W is
    written 0 at positives, then real_neg_samp_prob at negatives). The same for all three models."""
    num_items = data.num_items
    positive = torch.unique(data.train_pos[0] * num_items + data.train_pos[1])
    blocked = positive[~torch.isin(positive, data.train_neg[0] * num_items + data.train_neg[1])]
    return num_items - torch.bincount(torch.div(blocked, num_items, rounding_mode="floor"), minlength=data.num_users)


def check_args(args, data) -> None:
    """Flag values and data that would fail deep inside torch, or train on nothing, stop here instead."""
    if max(args.top_k) > data.num_items:
        raise InputError(f"--top_k {max(args.top_k)} is larger than the item count ({data.num_items})")
    for flag in ("r", "s"):
        value = getattr(args, flag)
        if not 0 < value < data.num_items:
            raise InputError(f"--{flag} {value} must be between 1 and the item count - 1 ({data.num_items - 1})")
    # ReFINe and LightGCN draw one negative per positive; ReFINe++ draws I // 10 without replacement.
    needed = data.num_items // 10 if args.model == "refine_plus" else 1
    if needed < 1:
        raise InputError(f"ReFINe++ draws item count // 10 negatives per positive, but {train_split_path(args)} "
                         f"has only {data.num_items} items (it needs 10 or more)")
    candidates = negative_candidate_counts(data)
    short = torch.nonzero(candidates < needed).flatten()
    if short.numel():
        user, train_path = int(short[0]), train_split_path(args)
        if needed == 1:
            raise InputError(f"{train_path}: user {data.user_ids[user]} rated every one of the {data.num_items} "
                             f"items positive, so no negative can be drawn for it: remove some of its positive "
                             f"rows, or the user")
        raise InputError(f"{train_path}: user {data.user_ids[user]} has only {int(candidates[user])} items that are "
                         f"not its train positives, but ReFINe++ draws {needed} (item count // 10) negatives per "
                         f"positive without replacement: remove some of its positive rows, or the user")


def check_output_paths(paths) -> None:
    """Before any work: every output can be written (utils.check_output_path); then make its folder."""
    for path in paths:
        check_output_path(path)
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create {path.parent} for the outputs: {exc.strerror}") from None


@torch.no_grad()
def ranked_items(model, data, exclude_edges, args):
    """(num_users, max(top_k)) each user's top items by score, exclude_edges (2, E) left out."""
    emb = model.propagate_embeddings()
    user_emb, item_emb = emb[:data.num_users], emb[data.num_users:]
    return metrics.masked_topk(user_emb, item_emb, exclude_edges, max(args.top_k), args.test_batch_size)


def evaluate(model, data, ground_truth, exclude_edges, args):
    """[(precision, recall, ndcg) for k in top_k] of a full ranking against ground_truth (2, E)."""
    topk_index = ranked_items(model, data, exclude_edges, args)
    return metrics.ranking_metrics(topk_index, ground_truth, data.num_items, args.top_k)


def write_per_user_metrics(path, data, users, per_k, ks):
    """CSV of each test user's (raw id) precision, recall and NDCG at max(ks): paired tests over users."""
    k = max(ks)
    precision, recall, ndcg = (values.tolist() for values in per_k[ks.index(k)])
    with atomic_write(path) as handle:
        handle.write(f"user_id,precision@{k},recall@{k},ndcg@{k}\n")
        for user, *values in zip(data.user_ids[users.cpu().numpy()].tolist(), precision, recall, ndcg):
            handle.write(f"{user}," + ",".join(map(repr, values)) + "\n")  # repr: every float digit


def save_torch(obj, path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def rng_state() -> dict:
    """Every generator's state in types torch.load(weights_only=True) reads (numpy's array as a list)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (name, keys.tolist(), position, has_gauss, cached_gaussian),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_json(obj, what: str, **kwargs) -> str:
    """json.dumps that refuses NaN and infinity (they would make the file invalid JSON)."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        raise InputError(f"{what}: a value is NaN or infinite, which JSON cannot hold") from None


def data_fingerprint(args) -> dict:
    """{file name: sha256} of the three split files: a resumed run must train on the same bytes."""
    splits = ["train_augment" if args.dataset_augment else "train_original", "validation", "test"]
    message = missing_split_message(args.data_dir, args.dataset, splits)
    if message:
        raise InputError(message)
    paths = [split_path(args.data_dir, args.dataset, split) for split in splits]
    return {path.name: sha256_of(path) for path in paths}


# Flags that must match for --resume to continue the same run. --data_dir may change: the state's
# data fingerprint checks that the files hold the same bytes wherever they are.
RUN_IDENTITY = ("model", "refine_plus_negatives", "sampler", "random_seed", "dataset", "dataset_augment", "batch_size",
                "embedding_dim", "layers", "learning_rate", "evaluation_step", "early_stopping_step", "top_k",
                "real_neg_samp_prob", "p", "q", "r", "s", "t", "duplicate_pairs")
STATE_KIND = "main.py training state v2"  # v1 (no kind, numpy arrays inside) predates the data fingerprint
STATE_KEYS = ("model", "optimizer", "epoch", "early_stopping", "history", "elapsed", "rng", "args", "data_sha256")


def load_resume_state(path: Path, args) -> dict:
    """The training state saved at `path`, checked to belong to this command and data, or an InputError."""
    if not path.is_file():
        raise InputError(f"--resume: no saved training state at {path}: rerun without --resume")
    start_over = f"rerun without --resume to start over (or delete {path})"
    try:
        # weights_only: a file from elsewhere cannot run code when read; everything saved is plain data.
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # torch.load reports damaged files by many exception types, with long texts
        raise InputError(f"--resume: {path} cannot be read as a training state (damaged, truncated, or not "
                         f"written by main.py): {start_over}") from None
    if not isinstance(state, dict) or state.get("kind") != STATE_KIND or not all(key in state for key in STATE_KEYS):
        found = ("a model checkpoint (a bare state_dict), not a training state"
                 if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())
                 else "not a training state of this version of main.py")
        raise InputError(f"--resume: {path} is {found}: {start_over}")
    changed = [flag for flag in RUN_IDENTITY if state["args"].get(flag) != getattr(args, flag)]
    if changed:
        raise InputError(f"--resume: {path} was saved with other values of --{', --'.join(changed)}: rerun with "
                         f"the same values, or {start_over}")
    fingerprint = data_fingerprint(args)
    changed = sorted(name for name in set(fingerprint) | set(state["data_sha256"])
                     if fingerprint.get(name) != state["data_sha256"].get(name))
    if changed:
        raise InputError(f"--resume: {', '.join(changed)} changed since {path} was saved: restore the data to "
                         f"resume, or {start_over}")
    return state


def check_resume_fits(state: dict, model, path: Path) -> None:
    """Before loading: the saved model has this model's parameters and shapes."""
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    saved = {name: tuple(value.shape) for name, value in state["model"].items()}
    if saved != expected:
        raise InputError(f"--resume: {path} holds a model of other parameters or shapes: rerun without "
                         f"--resume to start over (or delete {path})")


def output_dir(args) -> Path:
    """Where the run's files go: --result_dir, else result/<dataset> as published."""
    return Path(args.result_dir) if args.result_dir else Path("result") / args.dataset


class Progress:
    """How far the run got, in the words main() prints after `error: interrupted` on Ctrl-C."""

    def __init__(self):
        self.note = "while starting; nothing was written, so nothing can be resumed: rerun the command"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    log = RunLog(sys.stdout, output_dir(args) / f"{args.path_name}.out")  # stdout and its file
    progress = Progress()
    try:
        check_flags(args)
        with contextlib.redirect_stdout(log):
            code = run(args, log, progress)
        log.save()  # the whole log, final test included
        return code
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Exception) as exc:
        # After a stop, a library's own error while unwinding is the stop too; without one it is a bug.
        if not isinstance(exc, KeyboardInterrupt) and not cli.stop_requested:
            raise
        print(f"error: interrupted {progress.note}", file=sys.stderr)
        return 2


def run(args, log: RunLog, progress: Progress) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    set_seed(args.random_seed)
    torch.set_flush_denormal(args.flush_denormal)
    device = resolve_device(args.device, args.gpu_id)

    result_dir = output_dir(args)
    checkpoint_path = result_dir / f"{args.path_name}.pt"
    state_path = result_dir / f"{args.path_name}.last.pt"
    metrics_path = result_dir / f"{args.path_name}.metrics.jsonl"
    test_path = result_dir / f"{args.path_name}.test.json"
    test_users_path = result_dir / f"{args.path_name}.test_users.csv"
    # Published name and place, beside (not inside) result/<dataset>; inside a given --result_dir.
    not_early_stop_path = (result_dir if args.result_dir else Path("result")) / f"{args.dataset}_not_early_stop.pt"
    check_output_paths([checkpoint_path, state_path, metrics_path, test_path, test_users_path, log.path,
                        not_early_stop_path])
    state = load_resume_state(state_path, args) if args.resume else None
    progress.note = (f"before training; {state_path} is unchanged: rerun the same command to resume from it"
                     if args.resume else
                     "while loading the data; nothing was trained, so nothing can be resumed: rerun the command")
    print_config(args)

    print(RULE)
    print("data loading...")
    print("train set: train_augment" if args.dataset_augment else "train set: train_original")
    data = dataloader.load_splits(args.data_dir, args.dataset, bool(args.dataset_augment),
                                  encode_negatives=args.model == "refine_plus",
                                  duplicate_pairs=args.duplicate_pairs)
    check_args(args, data)
    data_sha256 = data_fingerprint(args)
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

    early_stopping = EarlyStopping(patience=args.early_stopping_step)
    history, first_epoch, elapsed = [], 1, 0.0
    if args.resume:
        check_resume_fits(state, model, state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        early_stopping.load_state_dict(state["early_stopping"])
        history, first_epoch, elapsed = state["history"], state["epoch"] + 1, state["elapsed"]
        set_rng_state(state["rng"])
        for record in history:  # the log reads as if the run had never stopped
            print(record["log"])
        print(f"resumed after epoch {state['epoch']} from {state_path}", file=sys.stderr)

    start_time = time.time() - elapsed

    def resume_from(last_epoch):
        return f"rerun the same command with --resume to continue after epoch {last_epoch} from {state_path}"

    for epoch in tqdm(range(first_epoch, args.epochs + 1), initial=first_epoch - 1, total=args.epochs,
                      desc="epochs", unit="epoch", file=sys.stderr, disable=None):
        if early_stopping.early_stop:
            break
        if cli.stop_requested:  # a stop whose KeyboardInterrupt a finalizer swallowed (Python only warns)
            raise KeyboardInterrupt
        # Each finished epoch leaves its state in state_path; before the first one there is none.
        progress.note = (f"during epoch {epoch}; {resume_from(epoch - 1)}" if epoch > 1 else
                         "during epoch 1, before any epoch finished, so nothing can be resumed: rerun the command")
        model.train()
        loss = train_one_epoch(model, optimizer, data, negatives, epoch, args)
        if not math.isfinite(loss):
            raise InputError(f"epoch {epoch}: the training loss is {loss} (training diverged): "
                             f"try a smaller --learning_rate")
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
                handle.writelines(to_json({key: value for key, value in record.items() if key != "log"},
                                          f"epoch {record['epoch']}'s validation metrics") + "\n"
                                  for record in history)
        save_torch({"kind": STATE_KIND, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "early_stopping": early_stopping.state_dict(), "history": history,
                    "elapsed": time.time() - start_time, "rng": rng_state(), "args": vars(args),
                    "data_sha256": data_sha256}, state_path)
        progress.note = f"after epoch {epoch}; {resume_from(epoch)}"
        log.save()

    progress.note = (f"after training; the best checkpoint {checkpoint_path} is saved: rerun the same command "
                     f"with --resume to test it without training")
    if early_stopping.early_stop:
        print(f"\nEarly stopping at epoch {early_stopping.best_epoch}. Best Validation Results:")
        print(format_metrics(args.top_k, early_stopping.best_metrics))
    train_seconds = time.time() - start_time
    print(f"\nTraining completed in {train_seconds} seconds.")
    if not early_stopping.early_stop:
        # Published: save the last model, print this line and stop without a test result.
        save_torch(model.state_dict(), not_early_stop_path)
        print("Early stopping does not trigger.")
        if early_stopping.best_epoch is None:
            return 0
        print(f"Testing the best checkpoint (epoch {early_stopping.best_epoch}); "
              f"the published script prints no test result here.")

    progress.note = (f"during the final test; training finished and the best checkpoint {checkpoint_path} "
                     f"(epoch {early_stopping.best_epoch}) is saved: rerun the same command with --resume to "
                     f"test it without training")
    model.load_state_dict(torch.load(checkpoint_path, weights_only=True))
    model.eval()
    exclude = train_interactions
    if args.eval_protocol == "strict":
        exclude = torch.cat([train_interactions, data.valid], dim=1)
    users, per_k = metrics.per_user_metrics(ranked_items(model, data, exclude, args), data.test,
                                            data.num_items, args.top_k)
    results = metrics.mean_over_users(per_k)
    print("\n" + RULE)
    print("Final Test Results")
    print(format_metrics(args.top_k, results))
    print(RULE)
    # The per-user file first: a test.json marks a finished run, with everything beside it.
    write_per_user_metrics(test_users_path, data, users, per_k, args.top_k)
    with atomic_write(test_path) as handle:
        handle.write(to_json({"best_epoch": early_stopping.best_epoch, "eval_protocol": args.eval_protocol,
                              "train_seconds": train_seconds, "test": metrics_by_k(args.top_k, results)},
                             "the final test metrics", indent=1))
    return 0


if __name__ == "__main__":
    cli.restore_ctrl_c()
    sys.exit(main())
