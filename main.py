"""Train and evaluate ReFINe (LightGCN + BPR with LLM-refined negative sampling), or ReFINe++ / LightGCN.

    python main.py --dataset ML-100K --r 100 > results4comparison/ReFINe_ML-100K.out
    python main.py --dataset ML-100K --model refine_plus --flush_denormal --path_name plus
    python main.py --help        # every flag, the outputs (result/<dataset>/<path_name>.*)

Command-compatible with the published script: same flags, defaults and log lines, so `diff`
against the published log shows only number differences. The log also goes to
result/<dataset>/<path_name>.out; flags and outputs are described in docs/training.md. The method is
docs/method.md §3-5; the deviations from the published code are listed in docs/deviations.md. The files a run
saves and the checks of --resume are in checkpoint.py.
"""
if __name__ == "__main__":
    # Parse and check the flags and the split files before the slow imports below (torch,
    # torch_geometric, pandas): --help, a bad flag value or a missing file then answer in a fraction of a second.
    import cli
    cli.parse_before_imports()
    import entry
    entry.check_packages()

import contextlib
import csv
import json
import math
import os
import sys
import time

import torch
from tqdm import tqdm

import checkpoint
import splits
import devices
import entry
import metrics
from cli import build_parser, check_flags, check_splits, split_files, split_names
from run_files import RunPaths
from training import TrainConfig, build_model
from utils import (EarlyStopping, InputError, RunLog, atomic_write, check_output_path, format_metrics,
                   metrics_by_k, set_seed)

RULE = "#" * 77


def print_config(args, device: torch.device) -> None:
    """The published header (its key spellings included), then the extra flags; `device:` names
    the device that runs (--device auto resolved).

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
    extras = [("data_dir", args.data_dir), ("device", devices.describe_device(device)),
              ("eval_protocol", args.eval_protocol),
              ("sampler", args.sampler), ("model", args.model)]
    if args.result_dir:
        extras.append(("result_dir", args.result_dir))
    if args.flush_denormal:
        extras.append(("flush_denormal", True))
    if args.deterministic:
        extras.append(("deterministic", True))
    if args.threads is not None:
        extras.append(("threads", args.threads))
    if args.save_every_s is not None:
        extras.append(("save_every_s", args.save_every_s))
    if args.duplicate_pairs != "error":
        extras.append(("duplicate_pairs", args.duplicate_pairs))
    if refine_plus:
        extras.append(("refine_plus_negatives", args.refine_plus_negatives))
    print(RULE)
    for key, value in published + extras:
        print(f"{key}: {value}")
    print(RULE + "\n")




def check_output_paths(paths) -> None:
    """Before any work: every output can be written (utils.check_output_path); then make its folder."""
    for path in paths:
        check_output_path(path)
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create {path.parent} for the outputs: {exc.strerror}") from None


def write_per_user_metrics(path, data, users, per_k, ks):
    """CSV of each test user's (raw id) precision, recall and NDCG at max(ks): paired tests over users.
    The csv module quotes a string id that holds a comma or a quote, so the columns never shift."""
    k = max(ks)
    precision, recall, ndcg = (values.tolist() for values in per_k[ks.index(k)])
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", f"precision@{k}", f"recall@{k}", f"ndcg@{k}"])
        # A float is written as its repr: every digit.
        writer.writerows(zip(data.user_ids[users.cpu().numpy()].tolist(), precision, recall, ndcg))


def to_json(obj, what: str, **kwargs) -> str:
    """json.dumps that refuses NaN and infinity (they would make the file invalid JSON)."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        raise InputError(f"{what}: a value is NaN or infinite, which JSON cannot hold") from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    paths = RunPaths.of(args)
    stop = entry.RunStop(paths, resuming=args.resume)
    return entry.run_script(lambda: run_locked(args, paths, stop), stop)


def run_locked(args, paths: RunPaths, stop: entry.RunStop) -> int:
    """The flags and output paths checked, then the run under its lock, its whole log saved at the end."""
    check_flags(args)
    check_splits(args)
    check_output_paths(paths.outputs())
    # stdout and its file; a closed stdout (`>&-`, sys.stdout is None): the file alone.
    log = RunLog(sys.stdout, paths.log)
    with checkpoint.run_lock(paths.lock), contextlib.closing(log), contextlib.redirect_stdout(log), \
            deterministic(args.deterministic):
        code = run(args, paths, log, stop)
        log.save()  # the final test included
    return code


# cuBLAS's deterministic workspace settings (torch.use_deterministic_algorithms refuses cuBLAS otherwise).
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")


@contextlib.contextmanager
def deterministic(on: bool):
    """--deterministic: torch's deterministic algorithms, and cuBLAS's deterministic workspace
    (CUBLAS_WORKSPACE_CONFIG=:4096:8 unless already one of DETERMINISTIC_CUBLAS), set before the run
    touches CUDA; both restored afterwards (main() may run again in the same process)."""
    if not on:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if before[1] not in DETERMINISTIC_CUBLAS:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = DETERMINISTIC_CUBLAS[0]
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        if before[1] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = before[1]


def run(args, paths: RunPaths, log: RunLog, stop: entry.RunStop) -> int:
    """Load (the resume state, the data, the model), train epoch by epoch, then test the best checkpoint."""
    device = set_up(args)
    state = checkpoint.load_resume_state(paths.state, args, paths.checkpoint) if args.resume else None
    stop.at("loading")
    print_config(args, device)
    config = TrainConfig.from_flags(args)
    data, data_sha256 = load_data(args, config, device)
    model, negatives, train_one_epoch = build_model(config, data)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    early_stopping = EarlyStopping(patience=args.early_stopping_step)
    history, first_epoch, elapsed = [], 1, 0.0
    if state is not None:
        history, first_epoch, elapsed = resume(state, model, optimizer, early_stopping, paths, device)
    train_interactions = data.train_interactions()

    start_time = time.time() - elapsed
    # The state of each finished epoch, written at most every --save_every_s seconds, and always at a new
    # best checkpoint, after the last epoch, and at a stop or an error (docs/training.md, Resuming).
    states = checkpoint.StateWriter(paths.state, save_every_seconds(args), first_epoch - 1)
    phase = ("epoch", first_epoch)
    try:
        for epoch in tqdm(range(first_epoch, args.epochs + 1), initial=first_epoch - 1, total=args.epochs,
                          desc="epochs", unit="epoch", file=sys.stderr, disable=None):
            if early_stopping.early_stop:
                break
            entry.raise_if_stopped()
            phase = ("epoch", epoch)
            stop.at(*phase, saved=states.saved_epoch)
            model.train()
            loss = train_one_epoch(model, optimizer, data, negatives, epoch, config)
            if not math.isfinite(loss):
                raise InputError(f"epoch {epoch}: the training loss is {loss} (training diverged): "
                                 f"try a smaller --learning_rate")
            if epoch % args.evaluation_step == 0:
                history.append(validate(model, data, train_interactions, early_stopping, epoch, loss, args, paths))
            state = checkpoint.training_state(model, optimizer, epoch, early_stopping, history,
                                              time.time() - start_time, args, data_sha256, device)
            states.keep(epoch, checkpoint.snapshot(state), now=early_stopping.best_epoch == epoch
                        or early_stopping.early_stop or epoch == args.epochs)
            phase = ("saved", epoch)
            stop.at(*phase, saved=states.saved_epoch)
            log.save()
    except BaseException:
        # The last finished epoch's state, if held: a stop (or an error) resumes from it. A write that
        # fails here leaves the state on disk as it was, and the line says so.
        with contextlib.suppress(OSError):
            if states.write_held():
                stop.at(*phase, saved=states.saved_epoch)
        raise

    stop.at("trained")
    train_seconds = time.time() - start_time
    if not report_training(model, early_stopping, train_seconds, args, paths):
        return 0
    stop.at("test", early_stopping.best_epoch)
    entry.raise_if_stopped()
    final_test(model, data, train_interactions, early_stopping.best_epoch, train_seconds, args, paths)
    return 0


DEFAULT_SAVE_EVERY_S = 30.0


def save_every_seconds(args) -> float:
    return DEFAULT_SAVE_EVERY_S if args.save_every_s is None else args.save_every_s


def set_up(args) -> torch.device:
    """Threads, seeds, denormals, and the device (a warning where --device auto falls back to the CPU
    on a machine whose NVIDIA GPU torch cannot use)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    set_seed(args.random_seed)
    torch.set_flush_denormal(args.flush_denormal)
    device = devices.resolve_device(args.device, args.gpu_id)
    if args.device == "auto" and device.type == "cpu":
        warning = devices.cuda_unusable_warning()
        if warning:
            print(warning, file=sys.stderr)
    return device


def load_data(args, config: TrainConfig, device: torch.device):
    """(the splits on `device`, their fingerprint), checked against the flags; prints the published data lines."""
    print(RULE)
    print("data loading...")
    print(f"train set: {split_names(args)[0]}")
    data = splits.load_splits(args.data_dir, args.dataset, bool(args.dataset_augment),
                              encode_negatives=config.model == "refine_plus", duplicate_pairs=args.duplicate_pairs)
    splits.check_trainable(data, config, args.top_k, split_files(args)[0])
    data_sha256 = checkpoint.data_fingerprint(args)
    print(f"user: {data.num_users},  item: {data.num_items}")
    print(f"train interations: {data.graph_edges.size(1)}")
    print(f"valid interations: {data.valid.size(1)}")
    print(f"test interations: {data.test.size(1)}")
    print("done!")
    print(RULE)
    return data.to(device), data_sha256


def resume(state, model, optimizer, early_stopping, paths: RunPaths, device: torch.device):
    """(history, first epoch, seconds so far) of a checked state, restored into the run; the earlier
    epochs' lines printed again, so the log reads as if the run had never stopped."""
    checkpoint.restore(state, model, optimizer, early_stopping, paths.state, device)
    for record in state["history"]:
        print(record["log"])
    print(f"resumed after epoch {state['epoch']} from {paths.state}", file=sys.stderr)
    return state["history"], state["epoch"] + 1, state["elapsed"]


def validate(model, data, train_interactions, early_stopping, epoch, loss, args, paths: RunPaths) -> dict:
    """The epoch's published lines (validation metrics, and the checkpoint of a new best); its history record."""
    results = metrics.evaluate(model, data, data.valid, train_interactions, args.top_k, args.test_batch_size)
    lines = [f"\nEpoch: {epoch:03d}, Loss: {loss:.4f}", format_metrics(args.top_k, results)]
    if early_stopping.update(epoch, results[-1][1], results):
        checkpoint.save(model.state_dict(), paths.checkpoint)
        lines.append(f"Save: {paths.checkpoint}")
    else:
        lines.append(f"EarlyStopping counter: {early_stopping.counter} out of {early_stopping.patience}")
    print("\n".join(lines), flush=True)
    return {"epoch": epoch, "loss": loss, "log": "\n".join(lines), "validation": metrics_by_k(args.top_k, results)}


def report_training(model, early_stopping, train_seconds, args, paths: RunPaths) -> bool:
    """The published end-of-training lines; whether there is a best checkpoint to test."""
    if early_stopping.early_stop:
        print(f"\nEarly stopping at epoch {early_stopping.best_epoch}. Best Validation Results:")
        print(format_metrics(args.top_k, early_stopping.best_metrics))
    print(f"\nTraining completed in {train_seconds} seconds.")
    if early_stopping.early_stop:
        return True
    # Published: save the last model, print this line and stop without a test result.
    checkpoint.save(model.state_dict(), paths.not_early_stop)
    print("Early stopping does not trigger.")
    if early_stopping.best_epoch is None:
        return False
    print(f"Testing the best checkpoint (epoch {early_stopping.best_epoch}); "
          f"the published script prints no test result here.")
    return True


def final_test(model, data, train_interactions, best_epoch, train_seconds, args, paths: RunPaths) -> None:
    """The best checkpoint on the test split: the published lines, the per-user CSV, then test.json."""
    model.load_state_dict(checkpoint.read_best(paths.checkpoint, model))
    model.eval()
    exclude = train_interactions
    if args.eval_protocol == "strict":
        exclude = torch.cat([train_interactions, data.valid], dim=1)
    ranked = metrics.ranked_items(model, data, exclude, max(args.top_k), args.test_batch_size)
    users, per_k = metrics.per_user_metrics(ranked, data.test, data.num_items, args.top_k)
    results = metrics.mean_over_users(per_k)
    print("\n" + RULE)
    print("Final Test Results")
    print(format_metrics(args.top_k, results))
    print(RULE)
    # The per-user file first: a test.json marks a finished run, with everything beside it.
    write_per_user_metrics(paths.test_users, data, users, per_k, args.top_k)
    with atomic_write(paths.test) as handle:
        handle.write(to_json({"best_epoch": best_epoch, "eval_protocol": args.eval_protocol,
                              "train_seconds": train_seconds, "test": metrics_by_k(args.top_k, results)},
                             "the final test metrics", indent=1))


if __name__ == "__main__":
    entry.install_stop_handlers()
    sys.exit(main())
