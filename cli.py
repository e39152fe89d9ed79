"""main.py's command line: the flags, their help, and the checks that need no data. Imports no torch.

    python main.py --help

main.py parses with this module before its slow imports (torch, torch_geometric, pandas), so
`--help` and a bad flag value answer at once. Checks that need the data (--top_k against the
item count, ...) stay in main.py.
"""
import argparse
import signal
import sys
from pathlib import Path

from catalog import SPLIT_IN_THE_WAY, default_data_dir, run_splits
from run_files import RunPaths
from utils import ArgumentParser, HelpFormatter, InputError, regular_file

EPILOG = """\
examples:
  python main.py --dataset ML-100K --r 100                  # ReFINe, as the published ML-100K run
  python main.py --dataset ML-1M --r 250 --path_name ml1m    # ML-1M (Netflix-1M: --r 300)
  python main.py --model refine_plus --flush_denormal --path_name plus       # ReFINe++
  python main.py --model lightgcn --dataset_augment 0 --path_name lightgcn   # the LightGCN baseline
  python main.py --dataset ML-100K --r 100 --resume         # continue that run after a Ctrl-C
  python main.py --dataset ML-100K --r 100 --threads 1      # one CPU thread (see docs/training.md)

outputs (under result/<dataset>/ or --result_dir, each written to a temporary name and then renamed):
  <path_name>.out            the log, as printed on stdout (rewritten after every epoch)
  <path_name>.pt             the best model's state_dict
  <path_name>.test.json      the final test metrics, the best epoch and the training seconds
  <path_name>.test_users.csv each test user's precision, recall and NDCG at the largest --top_k
  <path_name>.last.pt        the training state after the last finished epoch (for --resume)
  <path_name>.lock           held while the run writes (one process per run); removed at the end
  result/<dataset>_not_early_stop.pt  the last model, when early stopping did not trigger

Reads <data_dir>/<dataset>/<dataset>_{train_augment|train_original,validation,test}.csv.
More: docs/training.md.
"""


def dataset_augment(value: str) -> int:
    """--dataset_augment accepts 1/0 (published) and augment/original."""
    choices = {"1": 1, "augment": 1, "0": 0, "original": 0}
    if value.lower() not in choices:
        raise argparse.ArgumentTypeError(f"expected 1, 0, augment or original, got {value!r}")
    return choices[value.lower()]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python main.py", formatter_class=HelpFormatter, epilog=EPILOG,
                            description="Train and test ReFINe (LightGCN + BPR with LLM-refined negative sampling),\n"
                                        "ReFINe++ or LightGCN. The log goes to stdout and to "
                                        "result/<dataset>/<path_name>.out.")
    # The published flags: same names, defaults and order.
    parser.add_argument("--random_seed", type=int, default=2024,
                        help="seeds python, numpy and torch (torch_geometric.seed_everything)")
    parser.add_argument("--gpu_id", type=int, default=4,
                        help="GPU that --device auto uses when present (cuda:0 if there is no such GPU)")
    parser.add_argument("--dataset", type=str, default="ML-100K",
                        help="folder and file prefix under --data_dir: ML-100K, ML-1M, Netflix-1M or your own")
    parser.add_argument("--dataset_augment", type=dataset_augment, default=1,
                        help="1/augment: train on <NAME>_train_augment.csv (LLM-refined); "
                             "0/original: _train_original.csv")
    parser.add_argument("--batch_size", type=int, default=1024, help="train examples per mini-batch")
    parser.add_argument("--test_batch_size", type=int, default=8192, help="users scored at once in evaluation")
    parser.add_argument("--embedding_dim", type=int, default=64, help="LightGCN embedding size")
    parser.add_argument("--layers", type=int, default=4, help="LightGCN propagation layers")
    parser.add_argument("--learning_rate", type=float, default=0.001, help="Adam's learning rate")
    parser.add_argument("--evaluation_step", type=int, default=1, help="evaluate on validation every N epochs")
    parser.add_argument("--early_stopping_step", type=int, default=50,
                        help="patience: stop after N evaluations without a better validation recall at the "
                             "last --top_k")
    # Upstream declares type=list, which turns `--top_k 20` into ['2', '0']; integers here.
    parser.add_argument("--top_k", type=int, nargs="+", default=[5, 10, 15, 20],
                        help="cut-offs of precision, recall and NDCG")
    parser.add_argument("--epochs", type=int, default=1000, help="maximum number of epochs")
    parser.add_argument("--real_neg_samp_prob", type=float, default=1.5,
                        help="sampling weight of confirmed negatives (rating <= 1); other items weigh 1")
    parser.add_argument("--p", type=float, default=1.5,
                        help="ReFINe: sampling weight of items similar to a confirmed negative (from epoch --t)")
    parser.add_argument("--q", type=float, default=0.75,
                        help="ReFINe: sampling weight of items similar to a positive (from epoch --t)")
    parser.add_argument("--r", type=int, default=100,
                        help="ReFINe: similar items per confirmed negative (published: 100 ML-100K, 250 ML-1M, "
                             "300 Netflix-1M)")
    parser.add_argument("--s", type=int, default=5, help="ReFINe: similar items per positive")
    parser.add_argument("--t", type=int, default=50,
                        help="ReFINe: first epoch of the similarity step (above --epochs: never)")
    parser.add_argument("--path_name", type=str, default="nothing",
                        help="name of this run's outputs: result/<dataset>/<path_name>.*")

    extras = parser.add_argument_group("reproduction extras (their defaults reproduce the published run)")
    extras.add_argument("--model", choices=["refine", "refine_plus", "lightgcn"], default="refine",
                        help="refine: ReFINe; refine_plus: ReFINe++; lightgcn: uniform negatives over non-positives")
    extras.add_argument("--refine_plus_negatives", choices=["shared", "shared_fast", "per_positive"],
                        default="shared",
                        help="ReFINe++ only. shared (published; draw for draw on a CPU, the same distribution on "
                             "a GPU): every positive of a batch uses the negatives drawn for the batch's second "
                             "positive; shared_fast: the same, drawing only that row (same distribution, other "
                             "random numbers, faster); per_positive: each positive its own draw")
    extras.add_argument("--data_dir", type=str, default=default_data_dir(),
                        help="folder holding <NAME>/<NAME>_*.csv ($REFINE_DATA_DIR, else ./dataset)")
    extras.add_argument("--device", type=str, default="auto",
                        help="auto (cuda:<gpu_id> when a GPU exists, else cpu), cpu, cuda or cuda:N")
    extras.add_argument("--eval_protocol", choices=["faithful", "strict"], default="faithful",
                        help="strict also masks validation items when testing (published: not masked)")
    extras.add_argument("--result_dir", type=str, default=None,
                        help="folder of the outputs (default: result/<dataset>, as published)")
    extras.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from RESULT_DIR/<path_name>.last.pt (a finished "
                             "run: test its best checkpoint again without training)")
    extras.add_argument("--flush_denormal", action="store_true",
                        help="CPU: flush denormal floats (< 1.2e-38) to zero; ReFINe++ epochs run 3x faster "
                             "once its weights reach that range (off: computed as published)")
    extras.add_argument("--sampler", choices=["auto", "dense", "sparse"], default="auto",
                        help="negative sampler: dense (published; draw for draw on a CPU, the same distribution "
                             "on a GPU), sparse (no users x items matrix, same distribution), auto (dense up to "
                             "2**28 user-item pairs); ReFINe++ is always dense")
    extras.add_argument("--duplicate_pairs", choices=["error", "first", "last"], default="error",
                        help="split rows that repeat a (user, item) pair (e.g. a positive and a confirmed "
                             "negative): error refuses them with their line numbers; first / last keeps the "
                             "pair's first / last row (docs/bad-input.md)")
    extras.add_argument("--deterministic", action="store_true",
                        help="torch.use_deterministic_algorithms(True) and CUBLAS_WORKSPACE_CONFIG=:4096:8: on a "
                             "GPU the same command gives the same numbers every time, at some cost in speed "
                             "(docs/training.md); on a CPU it changes nothing")
    extras.add_argument("--save_every_s", type=float, default=None,
                        help="write the training state for --resume at most every this many seconds (default: "
                             "30; 0: after every epoch); always at a new best checkpoint, after the last epoch and "
                             "at a stop (docs/training.md, Resuming)")
    extras.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch (default: torch's own choice, usually the core count); "
                             "1 is faster on small graphs such as ML-100K")
    return parser


# Every numeric flag's range, (lowest, highest), both included; checked before the data is read.
# Lower bounds: what the method needs (sizes, weights and rates above 0). Upper bounds, by cause:
# - sizes (batch, embedding, layers, top_k, threads, GPU number) far above any real use, below what
#   makes torch allocate terabytes, overflow an index or start more threads than an OS gives;
# - sampling weights within float32 (W and the sampler hold them) with room for a row's sum of
#   up to 10**30 items' weights; a weight of 1e6 already makes the others never drawn;
# - epoch counts within 10**9 (a run of that many epochs would not end).
# Bounds that depend on the data (--top_k, --r and --s against the item count) are checked by
# main.py once the data is read.
BOUNDS = {
    "random_seed": (0, 2 ** 32 - 1),  # numpy's seed range
    "gpu_id": (0, 1023),
    "batch_size": (1, 2 ** 24),
    "test_batch_size": (1, 2 ** 24),
    "embedding_dim": (1, 2 ** 14),
    "layers": (1, 64),
    "learning_rate": (1e-12, 100.0),
    "evaluation_step": (1, 10 ** 9),
    "early_stopping_step": (0, 10 ** 9),
    "top_k": (1, 10 ** 6),
    "epochs": (1, 10 ** 9),
    "real_neg_samp_prob": (1e-6, 1e6),
    "p": (1e-6, 1e6),
    "q": (1e-6, 1e6),
    "r": (1, 2 ** 31 - 1),
    "s": (1, 2 ** 31 - 1),
    "t": (1, 10 ** 9),
    "threads": (1, 1024),
    "save_every_s": (0.0, 1e9),
}
# Flags that name things (a folder and file prefix, the run's file names): never a path.
NAMES = ("dataset", "path_name")


def check_name(flag: str, value: str) -> None:
    if value in ("", ".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise InputError(f"--{flag} {value!r}: must be a name, without / or \\ and not . or .. "
                         f"(--data_dir and --result_dir are the flags for a place)")


def check_flags(args) -> None:
    """Reject flag values that cannot work whatever the data: an InputError naming the flag and its range."""
    for flag, (low, high) in BOUNDS.items():
        values = getattr(args, flag)
        for value in values if isinstance(values, list) else [values]:
            # `not low <= value` is also true for NaN; None is a flag left to its default (--threads).
            if value is not None and not low <= value <= high:
                kind = f"a number from {low:g} to {high:g}" if isinstance(low, float) else \
                    f"an integer from {low} to {high}"
                raise InputError(f"--{flag} {value}: must be {kind}")
    for flag in NAMES:
        check_name(flag, getattr(args, flag))


def parse_main_flags(flags) -> argparse.Namespace:
    """A config's main.py flags as main.py reads them, its defaults filled in; flags it does not know are
    left aside, and a value it refuses raises argparse.ArgumentError (for the caller to word)."""
    parser = build_parser()
    parser.exit_on_error = False
    return parser.parse_known_args(flags)[0]


def split_names(args) -> tuple[str, str, str]:
    """The three splits the run reads: train (augment or original), validation, test."""
    return run_splits(bool(args.dataset_augment))


def split_files(args) -> list:
    """The paths of split_names(args), in that order."""
    from catalog import split_path  # catalog imports no pandas or torch

    return [split_path(args.data_dir, args.dataset, split) for split in split_names(args)]


def check_splits(args) -> None:
    """The split files the run reads exist (catalog names the command that makes a missing one) and
    are files: checked with the flags, before the slow imports."""
    from catalog import missing_split_message

    message = missing_split_message(args.data_dir, args.dataset, split_names(args))
    if message:
        raise InputError(message)
    for path in split_files(args):
        regular_file(path, f"missing {path}", SPLIT_IN_THE_WAY)


def lock_held_message(path, holder) -> str:
    """What a second main.py of the same run says (checkpoint.run_lock, and the check before the imports)."""
    return (f"another main.py (pid {holder or 'unknown'}) is writing this run ({path} is locked): wait for it "
            f"to finish or stop it, or give this run another --path_name")


def check_run_lock(path: Path) -> None:
    """InputError when another process holds the run's lock: checked with the flags, so that a second run
    of the same --path_name is refused before the slow imports. Only a probe: the run takes the lock
    itself later (checkpoint.run_lock, which retries for a moment so that this probe never refuses it)."""
    import errno
    import fcntl
    import os

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a link or a pipe: the run refuses it
    except OSError:  # no lock file (no run), or a path the run's own checks will name
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            holder = os.read(fd, 32).decode(errors="replace").strip()
            raise InputError(lock_held_message(path, holder)) from None
    finally:
        os.close(fd)  # releases the probe's shared lock, if it got one


def _interrupted_while_starting(signum, frame):
    sys.stderr.write("error: interrupted while starting; nothing was written, so nothing can be resumed: "
                     "rerun the command\n")
    sys.exit(2)


def parse_before_imports() -> None:
    """main.py, run as a script, calls this before its slow imports: --help, a bad flag and a missing
    split file exit at once (code 2 and one error line), and a Ctrl-C or SIGTERM during those imports
    ends with one line too (entry.install_stop_handlers replaces that handler once they are done)."""
    parser = build_parser()
    try:
        args = parser.parse_args()
        check_flags(args)
        check_splits(args)
        check_run_lock(RunPaths.of(args).lock)
    except InputError as exc:
        parser.exit(2, f"error: {exc}\n")
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored (nohup)
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    signal.signal(signal.SIGTERM, _interrupted_while_starting)
