"""Experiments over seeds: the paper's comparison in one command, and a report with significance tests.

    python experiments.py --dataset ML-100K --preset paper --seeds 5 --jobs 2 --out results/ML-100K
    python experiments.py --report results/ML-100K          # report only, from finished runs
    python experiments.py --dataset ML-100K --preset llm-need --seeds 10 --jobs 2 \
        --out results4comparison/ML-100K-relabel -- --sampler sparse

A config is a named set of main.py flags; `--preset paper` holds the five of the paper's ML-100K
comparison. A flag may hold `{seed}`, which each run replaces by its seed. Every (config, seed) is
one run of main.py itself, in OUT/<config>/seed<S>/ (sweep.py runs them; run_files.py names that layout);
rerunning the same command after a crash or Ctrl-C loses no finished epoch. A run whose --data_dir
is a relabelled set (dataset-relabel/<set>, docs/relabel.md) finds it made before the runs start.
The report (report.py) is printed and written to OUT as summary.md, summary.tex, summary.json,
curves.png and bars.png. This module is the command line.
"""
import argparse
import importlib.util
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import entry
import report
import significance
import sweep
from llm.relabel_rules import FRESH_SETS, NON_LLM_RULES, RELABEL_DIR, RELABEL_SETS, relabel_set
from run_files import MANIFEST
from sweep import OWN_FLAGS, SEED_PLACEHOLDER
from utils import ArgumentParser, HelpFormatter, InputError

FIRST_SEED = 2024  # seed 2024 first: it is the published run's seed
MAX_SEED_COUNT = 100  # --seeds N above this is refused: it is almost surely a seed, not a count
# The sweep folder's own files: no config may be named like them.
RESERVED_NAMES = (MANIFEST, "summary.md", "summary.tex", "summary.json", "curves.png", "bars.png")

PRESETS = {
    "paper": {
        "lightgcn-original": ["--model", "lightgcn", "--dataset_augment", "0"],
        "lightgcn-augment": ["--model", "lightgcn"],
        # The re-weighted BPR alone: a first similarity epoch no run reaches.
        "refine-no-similarity": ["--t", "1000000"],
        "refine": [],
        "refine_plus": ["--model", "refine_plus"],
    },
    # Does the gain need an LLM (docs/relabel.md)? LightGCN and ReFINe on the LLM's labels (the
    # baseline), the original ratings, and each non-LLM rule's labels, made beforehand by
    # `python refine_llm.py relabel NAME --rule RULE --out_dir dataset-relabel/RULE`.
    "relabel": {
        "lightgcn-llm": ["--model", "lightgcn"],
        "refine-llm": [],
        "lightgcn-original": ["--model", "lightgcn", "--dataset_augment", "0"],
        "refine-original": ["--dataset_augment", "0"],
        **{f"{model}-{rule}": (["--model", "lightgcn"] if model == "lightgcn" else [])
           + ["--data_dir", f"{RELABEL_DIR}/{rule}"] for rule in NON_LLM_RULES for model in ("lightgcn", "refine")},
    },
}

# Does the gain need an LLM, decided (docs/relabel.md, the decisive study): each arm's data flags.
# llm, original and all-positive are the relabel preset's, so that its finished runs count here.
LLM_NEED_ARMS = {
    "llm": [],
    "original": ["--dataset_augment", "0"],
    **{arm: ["--data_dir", f"{RELABEL_DIR}/{arm}"]
       for arm in ("all-positive", "all-positive-all", "star-threshold", "star-threshold-all", "llm+star-threshold")},
    # drawn anew for each training seed, with that seed
    "random-matched-fresh": ["--data_dir", f"{RELABEL_DIR}/random-matched-fresh/seed{SEED_PLACEHOLDER}"],
}
# Datasets whose study has fewer arms (the pre-registered plan); every other dataset gets all of them.
LLM_NEED_DATASET_ARMS = {
    "Amazon_Digital_Music": ("llm", "original", "all-positive-all", "star-threshold-all", "random-matched-fresh"),
}


def llm_need_configs(dataset) -> dict:
    """--preset llm-need for `dataset`: {model}-{arm} for LightGCN (--model lightgcn) and ReFINe (the default)."""
    arms = LLM_NEED_DATASET_ARMS.get(dataset, tuple(LLM_NEED_ARMS))
    return {f"{model}-{arm}": (["--model", "lightgcn"] if model == "lightgcn" else []) + LLM_NEED_ARMS[arm]
            for arm in LLM_NEED_ARMS if arm in arms for model in ("lightgcn", "refine")}


PRESETS["llm-need"] = llm_need_configs("ML-100K")
# Presets whose configs each name their own --data_dir: one after -- would override them all.
OWN_DATA_PRESETS = ("relabel", "llm-need")


def preset_configs(preset, dataset) -> dict:
    return llm_need_configs(dataset) if preset == "llm-need" else dict(PRESETS[preset])


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python experiments.py",
        description="Run several configs x seeds of main.py in parallel and report mean +- std, "
                    "95% intervals, and each config against a baseline: the difference with its interval, "
                    "Welch's test over seeds (Holm-corrected), an equivalence test and one verdict word.",
        formatter_class=HelpFormatter,
        usage="%(prog)s [options] [-- MAIN.PY FLAGS FOR EVERY RUN]",
        epilog="examples:\n"
               "  python experiments.py --dataset ML-100K --seeds 5 --jobs 2 --out results/ML-100K "
               "-- --sampler sparse\n"
               "  python experiments.py --dataset ML-100K --configs refine_plus --seeds 3 "
               "--out results/ML-100K -- --flush_denormal\n"
               "  python experiments.py --dataset ML-1M --config tuned=\"--p 2 --q 0.5\" --configs refine "
               "--out results/ML-1M\n"
               "  python experiments.py --dataset ML-100K --configs refine --seeds 2024, --out results/one  "
               "# the published seed alone\n"
               "  python experiments.py --dataset ML-100K --preset llm-need --seeds 10 --jobs 2 "
               "--out results4comparison/ML-100K-relabel -- --sampler sparse\n"
               "  python experiments.py --dataset ML-100K --config fresh=\"--data_dir "
               "dataset-relabel/random-matched-fresh/seed{seed}\" --seeds 3 --out results/fresh\n"
               "  python experiments.py --report results/ML-100K\n"
               "outputs: OUT/<config>/seed<S>/run.* per run; OUT/summary.{md,tex,json}, OUT/curves.png, "
               "OUT/bars.png")
    parser.add_argument("--dataset", help="dataset name, as main.py --dataset (required unless --report)")
    parser.add_argument("--out", help="output folder of the sweep (required unless --report)")
    parser.add_argument("--report", metavar="OUT",
                        help="only write the report of the finished runs in OUT (default: run the sweep, then report)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                        help="named set of configs: paper = " + ", ".join(PRESETS["paper"]) + "; relabel = "
                             "LightGCN and ReFINe on the LLM's labels, the original ratings and each of "
                             f"{RELABEL_DIR}/<rule>/; llm-need = the decisive study's arms for --dataset "
                             "(ML-100K: " + ", ".join(LLM_NEED_ARMS) + "; Amazon_Digital_Music: "
                             + ", ".join(LLM_NEED_DATASET_ARMS["Amazon_Digital_Music"]) + "); missing relabelled "
                             "sets are made before the runs (docs/relabel.md)")
    parser.add_argument("--configs", nargs="+", metavar="NAME",
                        help="run only these configs (of the preset or of --config; default: all of them)")
    parser.add_argument("--config", action="append", default=[], metavar='NAME="--flag value ..."',
                        help="add a config of main.py flags; repeatable; {seed} in a flag is each run's seed "
                             "(default: none)")
    parser.add_argument("--seeds", nargs="+", default=["5"], metavar="N | S1 S2 | S,",
                        help=f"one number N (at most {MAX_SEED_COUNT}): the seeds 2024 .. 2024+N-1; several "
                             "numbers, or numbers with commas: those seeds (--seeds 2024, is seed 2024 alone) "
                             "(default: 5, i.e. 2024 .. 2028)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (local executor)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each run (local executor; a config's or `-- --threads N` wins); "
                             "more than 1 pays only on an idle machine with cores to spare")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="devices for the runs, e.g. cuda:0 cuda:1 (as this process sees them) or cpu "
                             "(default: every GPU torch can use, else cpu); several jobs may share one; each "
                             "run sees only its own GPU, as cuda:0")
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local: a pool of --jobs processes here; ray: one Ray task per run")
    parser.add_argument("--ray_address", default=None,
                        help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray instance)")
    parser.add_argument("--ray_timeout", type=float, default=60.0,
                        help="ray: seconds to wait for the Ray cluster to answer before giving up with one line")
    parser.add_argument("--gpus_per_run", type=float, default=None,
                        help="ray: GPUs per run, fractions share a GPU (default: 1 if the cluster has "
                             "GPUs, else 0)")
    parser.add_argument("--cpus_per_run", type=int, default=1, help="ray: CPU cores (and torch threads) per run")
    parser.add_argument("--baseline", nargs="+", default=None, metavar="NAME",
                        help="config the others are tested against (default: the first); with one per model "
                             "(e.g. --baseline lightgcn-llm refine-llm), each config is tested against the one "
                             "trained with its own --model")
    parser.add_argument("--k", type=int, default=20, help="cut-off of the reported metrics")
    parser.add_argument("--margin", type=margin, default=significance.DEFAULT_MARGIN, metavar="M",
                        help="equivalence margin, relative to the baseline's mean: 1%% or 0.01 (default: 1%%); a "
                             "difference inside +-M by an equivalence test is reported as equivalent")
    parser.add_argument("--paired", metavar="REASON", default=None,
                        help="test runs paired by seed (paired t-test) instead of Welch's unpaired test; give the "
                             "reason, which the report prints: pairing is right only when two configs' runs share "
                             "their random stream (default: unpaired)")
    parser.add_argument("--published", nargs="+", default=[], metavar="CONFIG=LOG",
                        help="place a published single run in CONFIG's 95%% prediction interval of one run; LOG "
                             "is a log file or published:NAME / published-plus:NAME (as compare.py reads them), "
                             "e.g. refine=published:ML-100K")
    return parser


def margin(text: str) -> float:
    """--margin: '1%' or '0.01', a fraction strictly between 0 and 1."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a percentage (1% or 0.01)") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a margin above 0 and below 100% (e.g. 1%)")
    return value


def published_pairs(values) -> list:
    """--published CONFIG=LOG ... -> [(config, LOG)]."""
    pairs = []
    for value in values:
        config, sep, log = value.partition("=")
        if not sep or not config or not log:
            raise InputError(f"--published {value}: write CONFIG=LOG, e.g. refine=published:ML-100K")
        pairs.append((config, log))
    return pairs


@dataclass
class Options:
    """Parsed command line: argparse's namespace plus the main.py flags given after `--`."""
    args: argparse.Namespace
    extra_flags: list


def parse_args(argv) -> Options:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.report is None and (args.dataset is None or args.out is None):
        parser.error("--dataset and --out are required (or --report OUT for a report only)")
    check_main_flags(parser, extra)
    for flag in extra:
        if flag.split("=")[0] in OWN_FLAGS:
            parser.error(f"{flag} after --: experiments.py sets it for every run (use --seeds / --devices)")
        if flag.split("=")[0] == "--data_dir" and args.preset in OWN_DATA_PRESETS:
            # After --, it would win over each config's own folder: every config would train on one set.
            parser.error(f"--data_dir after -- with --preset {args.preset}: each config has its own data folder; "
                         f"set REFINE_DATA_DIR for the LLM's and the original ratings instead")
    if args.paired is not None and not args.paired.strip():
        parser.error("--paired needs its reason (why the runs of two configs share their random stream)")
    if args.jobs < 1 or args.cpus_per_run < 1 or args.threads < 1:
        parser.error("--jobs, --threads and --cpus_per_run must be at least 1")
    if not (math.isfinite(args.ray_timeout) and args.ray_timeout > 0):
        parser.error(f"--ray_timeout {args.ray_timeout}: must be a number of seconds > 0")
    if args.gpus_per_run is not None and not (math.isfinite(args.gpus_per_run) and args.gpus_per_run >= 0):
        parser.error(f"--gpus_per_run {args.gpus_per_run}: must be a number >= 0 (0.5 puts two runs on a GPU)")
    if args.executor == "ray" and args.report is None and importlib.util.find_spec("ray") is None:
        parser.error("--executor ray needs Ray: pip install -r requirements-ray.txt")  # before any run starts
    return Options(args, extra)


def check_main_flags(parser, extra) -> None:
    """The flags after `--` must be main.py's, written out in full: the guards below look for flags by
    their full names, and main.py (like every script here) takes no abbreviation; refused now, not in
    every run."""
    import cli

    main_parser = cli.build_parser()
    main_parser.exit_on_error = False
    try:
        unknown = main_parser.parse_known_args(extra)[1]
    except argparse.ArgumentError as exc:
        parser.error(f"after --: main.py refuses {exc}")
    flags = [flag for flag in unknown if flag.startswith("-")] or unknown
    if flags:
        parser.error(f"{' '.join(flags)} after --: not a main.py flag (flags are written in full; see "
                     f"python main.py --help)")


def resolve_seeds(values) -> list:
    """--seeds N -> [2024, ..., 2024 + N - 1]; --seeds A B C or A,B or A, -> [A, B, C] (repeats dropped).

    One number is a count, up to MAX_SEED_COUNT: a larger one is almost surely a seed (--seeds 2024
    would start 2,024 runs), so it is refused with the way to write one seed.
    """
    text = " ".join(values)
    parts = [part for value in values for part in value.split(",") if part.strip()]
    if not parts or not all(re.fullmatch(r"\s*-?\d+\s*", part) for part in parts):
        raise InputError(f"--seeds {text}: give a number of seeds, or seeds as integers (2024 7 9 or 2024,7,9)")
    numbers = [int(part) for part in parts]
    if len(numbers) == 1 and "," not in text:
        count = numbers[0]
        if count < 1:
            raise InputError(f"--seeds {count}: give a number of seeds >= 1, or seeds with a comma (--seeds {count},)")
        if count > MAX_SEED_COUNT:
            raise InputError(f"--seeds {count}: one number is a count of seeds, at most {MAX_SEED_COUNT}; for seed "
                             f"{count} alone write --seeds {count}, (several: --seeds {count} {count + 1})")
        return list(range(FIRST_SEED, FIRST_SEED + count))
    bad = [seed for seed in numbers if not 0 <= seed < 2 ** 32]
    if bad:  # main.py's (numpy's) seed range, checked before any run starts
        raise InputError(f"--seeds {text}: seed {bad[0]} out of range; seeds are integers from 0 to 2**32 - 1")
    return list(dict.fromkeys(numbers))


def resolve_configs(args) -> list:
    """[(name, main.py flags)] in order: the preset's configs, then --config ones, filtered by --configs."""
    configs = preset_configs(args.preset, args.dataset)
    added = set()
    for spec in args.config:
        name, sep, flags = spec.partition("=")
        # A name is a folder in OUT: no path, no "." or "..", none of OUT's own files.
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name) or set(name) == {"."}:
            raise InputError(f'--config {spec!r}: write NAME="--flag value ...", NAME of letters, digits, _ . + - '
                             f'(a name, not a path)')
        if name in RESERVED_NAMES:
            raise InputError(f"--config {name}: {name} is a file of the sweep folder; choose another name")
        if name in added:
            raise InputError(f"--config {name}: given twice; give each config its own name")
        if name in configs:
            raise InputError(f"--config {name}: a config of --preset {args.preset} has this name "
                             f"({shlex.join(configs[name]) or 'no flags'}); choose another name")
        try:
            configs[name] = shlex.split(flags)
        except ValueError as exc:
            raise InputError(f"--config {name}: cannot split the flags ({exc})") from None
        added.add(name)
    if args.configs:
        unknown = [name for name in args.configs if name not in configs]
        if unknown:
            raise InputError(f"--configs: unknown config(s) {', '.join(unknown)} (known: {', '.join(configs)})")
        custom = [spec.partition("=")[0] for spec in args.config]
        configs = {name: configs[name] for name in dict.fromkeys(args.configs + custom)}
    return list(configs.items())


class RelabelledSets:
    """The relabelled sets a sweep makes itself (sweep.sweep's `maker`): a run whose --data_dir is
    RELABEL_DIR/<set> (llm.relabel_rules.relabel_set) and whose train file is missing gets it from
    `refine_llm.py relabel` on the default data folder (./dataset or $REFINE_DATA_DIR, where main.py
    reads the LLM's and the original ratings) before any run starts. The train file is written
    last, so a set stopped half-way is made again by the rerun."""

    def pending(self, flags):
        """(folder, dataset) of a run's relabelled set still to make, else None."""
        import cli
        from catalog import split_path

        try:
            main_args = cli.parse_main_flags(flags)
        except argparse.ArgumentError:  # main.py's own message, in the run
            return None
        folder = Path(main_args.data_dir)
        # Every file a run reads: a set missing its validation file is made again, not downloaded.
        if folder.parts[:1] != (RELABEL_DIR,) or all(split_path(folder, main_args.dataset, split).is_file()
                                                    for split in ("train_augment", "validation", "test")):
            return None
        return folder, main_args.dataset

    def command(self, folder, dataset) -> list:
        """refine_llm.py's arguments that make `folder`."""
        from catalog import default_data_dir

        rule, scope, seed = relabel_set(folder)
        return (["relabel", dataset, "--data_dir", default_data_dir(), "--rule", rule, "--scope", scope,
                 "--out_dir", str(folder)] + ([] if seed is None else ["--seed", str(seed)]))

    def check(self, needs) -> None:
        """InputError for a set that is not one of ours, or whose source files are missing."""
        from catalog import SPLITS, default_data_dir, missing_split_message, split_path

        for (folder, dataset), run in needs.items():
            if relabel_set(folder) is None:
                raise InputError(f"config {run.config}: {split_path(folder, dataset, 'train_augment')} not found, and "
                                 f"{folder} is not a set experiments.py makes ({RELABEL_DIR}/<set> with <set> one of "
                                 f"{', '.join(RELABEL_SETS)}, or {RELABEL_DIR}/<fresh>/seed<S> with <fresh> one of "
                                 f"{', '.join(FRESH_SETS)}); make it with `python refine_llm.py relabel` "
                                 f"(docs/relabel.md)")
            source = default_data_dir()
            message = missing_split_message(source, dataset, SPLITS)
            llm = split_path(source, dataset, "train_augment")
            if message is None and not llm.is_file():
                message = f"{llm} not found: the LLM's labels that {folder} is made from"
            if message:
                raise InputError(f"config {run.config}: to make {folder}: {message}")

    def make(self, needs, say) -> None:
        import refine_llm

        for number, (folder, dataset) in enumerate(needs, 1):
            argv = self.command(folder, dataset)
            say(f"relabelled set {number}/{len(needs)}: python refine_llm.py {shlex.join(argv)}")
            # A stop here ends with experiments.py's own line: the set's files are whole or absent.
            refine_llm.stage_relabel(refine_llm.build_parser().parse_args(argv), entry.Stop(""), show=False)


def run(options: Options) -> int:
    """The command: a report only, or a sweep and then its report; 1 if a run failed."""
    args = options.args
    statistics = dict(margin=args.margin, paired=args.paired, published=published_pairs(args.published))
    if args.report:
        report.report(Path(args.report), args.baseline, args.k, **statistics)
        return 0
    configs = resolve_configs(args)
    try:
        failed = sweep.sweep(args, configs, resolve_seeds(args.seeds), options.extra_flags, RelabelledSets())
    except sweep.Stopped as stopped:
        # What finished before the stop is reported, as after a sweep that ran to its end.
        if stopped.finished:
            report.report(Path(args.out), args.baseline, args.k, **statistics)
        raise InputError(stopped.line(f" (the report of those is in {args.out})" if stopped.finished else "")) \
            from None
    report.report(Path(args.out), args.baseline, args.k, **statistics)
    if failed:
        print(f"{len(failed)} run(s) failed: " + "; ".join(f"{run.label}: {sweep.last_line(run)}" for run in failed),
              file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    options = parse_args(argv)
    # Nothing is lost: finished runs and epochs are kept, and a relabelled set without its train
    # file (written last) is made again.
    return entry.run_script(lambda: run(options), entry.Stop("nothing was lost: rerun the same command"))


if __name__ == "__main__":
    entry.check_packages()
    entry.install_stop_handlers()
    sys.exit(main())
