"""main.py's command line: the flags, their help, and the checks that need no data. Imports no torch.

    python main.py --help

main.py parses with this module before its slow imports (torch, torch_geometric, pandas), so
`--help` and a bad flag value answer at once. Checks that need the data (--top_k against the
item count, ...) stay in main.py.
"""
import argparse
import math
import os
import signal
import sys

from utils import ArgumentParser, HelpFormatter, InputError

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
  <path_name>.metrics.jsonl  one JSON line per evaluated epoch (loss, validation metrics)
  <path_name>.test.json      the final test metrics, the best epoch and the training seconds
  <path_name>.test_users.csv each test user's precision, recall and NDCG at the largest --top_k
  <path_name>.last.pt        the training state after the last finished epoch (for --resume)
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
    extras.add_argument("--data_dir", type=str, default=os.environ.get("REFINE_DATA_DIR", "dataset"),
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
    extras.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch (default: torch's own choice, usually the core count); "
                             "1 is faster on small graphs such as ML-100K")
    return parser


# Flags whose value must be > 0 (or >= 0); finite for the floats. Bounds that depend on the data
# (--top_k, --r and --s against the item count) are checked by main.py once the data is read.
POSITIVE = ("learning_rate", "real_neg_samp_prob", "p", "q", "batch_size", "test_batch_size", "embedding_dim",
            "layers", "evaluation_step", "epochs", "r", "s", "t")
NON_NEGATIVE = ("random_seed", "gpu_id", "early_stopping_step")


def check_flags(args) -> None:
    """Reject flag values that cannot work whatever the data: an InputError naming the flag."""
    for flag in POSITIVE + NON_NEGATIVE:
        value = getattr(args, flag)
        if not math.isfinite(value) or value < 0 or (value == 0 and flag in POSITIVE):
            kind = "a finite number" if isinstance(value, float) else "an integer"
            raise InputError(f"--{flag} {value}: must be {kind} {'> 0' if flag in POSITIVE else '>= 0'}")
    if args.random_seed >= 2 ** 32:  # numpy's seed range
        raise InputError(f"--random_seed {args.random_seed}: must be below 2**32")
    if min(args.top_k) < 1:
        raise InputError(f"--top_k {min(args.top_k)}: every value must be an integer > 0")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads {args.threads}: must be an integer > 0")


def _interrupted_while_starting(signum, frame):
    sys.stderr.write("error: interrupted while starting; nothing was written, so nothing can be resumed: "
                     "rerun the command\n")
    sys.exit(2)


# Set by the stop handler: main() then reports any error that follows as the interrupt, since a
# library may turn the KeyboardInterrupt into an error of its own while it unwinds.
stop_requested = False


def _stop_like_ctrl_c(signum, frame):
    global stop_requested
    stop_requested = True
    raise KeyboardInterrupt


def parse_before_imports() -> None:
    """main.py, run as a script, calls this before its slow imports: --help and a bad flag exit at
    once (code 2 and one error line), and a Ctrl-C or SIGTERM during those imports ends with one line too."""
    parser = build_parser()
    try:
        check_flags(parser.parse_args())
    except InputError as exc:
        parser.exit(2, f"error: {exc}\n")
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored (nohup)
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    signal.signal(signal.SIGTERM, _interrupted_while_starting)


def restore_ctrl_c() -> None:
    """From here on a Ctrl-C raises KeyboardInterrupt again, which main() reports. A SIGTERM (a job
    scheduler's stop, or experiments.py passing a Ctrl-C on) does the same: the finished epochs are
    kept, one line, exit code 2. It works where Ctrl-C is ignored, as in background jobs."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, _stop_like_ctrl_c)
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
