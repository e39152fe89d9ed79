"""Experiments over seeds: the paper's comparison in one command, and a report with significance tests.

    python experiments.py --dataset ML-100K --preset paper --seeds 5 --jobs 2 --out results/ML-100K
    python experiments.py --report results/ML-100K          # report only, from finished runs

A config is a named set of main.py flags; `--preset paper` holds the five of the paper's ML-100K
comparison. Every (config, seed) is one run of main.py itself, in OUT/<config>/seed<S>/:
run.out (the log), run.metrics.jsonl, run.test.json, run.test_users.csv (per-user test metrics),
run.pt and run.last.pt (checkpoints), run.err (stderr) and run.json (how it was started). A run with
a run.test.json is finished and never run again; one with only run.last.pt continues with
`--resume`, so rerunning the same command after a crash or Ctrl-C loses no finished epoch.

The report (printed, and written to OUT as summary.md, summary.tex, summary.json, curves.png and
bars.png) gives per config, at k = 20, mean +- sample std and the 95% t interval of the test
metrics over seeds, and against a baseline config the relative difference of the means, a paired
t-test over seeds and a Wilcoxon signed-rank test over users (scipy.stats).
"""
import argparse
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import compare
from utils import ArgumentParser, HelpFormatter, InputError, atomic_write

ROOT = Path(__file__).resolve().parent
MAIN = ROOT / "main.py"
MANIFEST = "experiments.json"
FIRST_SEED = 2024  # seed 2024 first: it is the published run's seed

# The published --r of each dataset (SPEC 1.1); main.py's own default (100) elsewhere.
from catalog import PUBLISHED_R  # noqa: E402

PRESETS = {
    "paper": {
        "lightgcn-original": ["--model", "lightgcn", "--dataset_augment", "0"],
        "lightgcn-augment": ["--model", "lightgcn"],
        # The re-weighted BPR alone: a first similarity epoch no run reaches.
        "refine-no-similarity": ["--t", "1000000"],
        "refine": [],
        "refine_plus": ["--model", "refine_plus"],
    },
}
# main.py flags that experiments.py sets itself for every run.
OWN_FLAGS = ("--random_seed", "--path_name", "--result_dir", "--device", "--resume")
METRICS = ("precision", "recall", "ndcg")


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python experiments.py", description="Run several configs x seeds of main.py in parallel and report mean +- std, "
                    "95% confidence intervals and paired significance tests.",
        formatter_class=HelpFormatter,
        usage="%(prog)s [options] [-- MAIN.PY FLAGS FOR EVERY RUN]",
        epilog="examples:\n"
               "  python experiments.py --dataset ML-100K --seeds 5 --jobs 2 --out results/ML-100K "
               "-- --sampler sparse\n"
               "  python experiments.py --dataset ML-100K --configs refine_plus --seeds 3 "
               "--out results/ML-100K -- --flush_denormal\n"
               "  python experiments.py --dataset ML-1M --config tuned=\"--p 2 --q 0.5\" --configs refine "
               "--out results/ML-1M\n"
               "  python experiments.py --report results/ML-100K\n"
               "outputs: OUT/<config>/seed<S>/run.* per run; OUT/summary.{md,tex,json}, OUT/curves.png, "
               "OUT/bars.png")
    parser.add_argument("--dataset", help="dataset name, as main.py --dataset (required unless --report)")
    parser.add_argument("--out", help="output folder of the sweep (required unless --report)")
    parser.add_argument("--report", metavar="OUT", help="only write the report of the finished runs in OUT (default: run the sweep, then report)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                        help="named set of configs: paper = " + ", ".join(PRESETS["paper"]))
    parser.add_argument("--configs", nargs="+", metavar="NAME",
                        help="run only these configs (of the preset or of --config; default: all of them)")
    parser.add_argument("--config", action="append", default=[], metavar='NAME="--flag value ..."',
                        help="add a config of main.py flags; repeatable (default: none)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[5], metavar="N | S1 S2",
                        help="one number N: the seeds 2024 .. 2024+N-1; several numbers: those seeds "
                             "(default: 5, i.e. 2024 .. 2028)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (local executor)")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="devices for the runs, e.g. cuda:0 cuda:1 or cpu (default: every visible "
                             "GPU, else cpu); several jobs may share one")
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local: a pool of --jobs processes here; ray: one Ray task per run")
    parser.add_argument("--ray_address", default=None,
                        help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray instance)")
    parser.add_argument("--gpus_per_run", type=float, default=None,
                        help="ray: GPUs per run, fractions share a GPU (default: 1 if the cluster has "
                             "GPUs, else 0)")
    parser.add_argument("--cpus_per_run", type=int, default=1, help="ray: CPU cores (and torch threads) per run")
    parser.add_argument("--baseline", default=None, help="config the others are tested against (default: the first)")
    parser.add_argument("--k", type=int, default=20, help="cut-off of the reported metrics")
    return parser


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
    for flag in extra:
        if flag.split("=")[0] in OWN_FLAGS:
            parser.error(f"{flag} after --: experiments.py sets it for every run (use --seeds / --devices)")
    if args.jobs < 1 or args.cpus_per_run < 1:
        parser.error("--jobs and --cpus_per_run must be at least 1")
    if args.gpus_per_run is not None and args.gpus_per_run < 0:
        parser.error("--gpus_per_run must not be negative")
    return Options(args, extra)


def resolve_seeds(values) -> list:
    """--seeds N -> [2024, ..., 2024 + N - 1]; --seeds A B C -> [A, B, C] (repeats dropped)."""
    if len(values) == 1:
        if values[0] < 1:
            raise InputError(f"--seeds {values[0]}: give a number of seeds >= 1, or two or more seeds")
        return list(range(FIRST_SEED, FIRST_SEED + values[0]))
    return list(dict.fromkeys(values))


def resolve_configs(args) -> list:
    """[(name, main.py flags)] in order: the preset's configs, then --config ones, filtered by --configs."""
    configs = dict(PRESETS[args.preset])
    for spec in args.config:
        name, sep, flags = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise InputError(f'--config {spec!r}: write NAME="--flag value ...", NAME of letters, digits, _ . + -')
        try:
            configs[name] = shlex.split(flags)
        except ValueError as exc:
            raise InputError(f"--config {name}: cannot split the flags ({exc})") from None
    if args.configs:
        unknown = [name for name in args.configs if name not in configs]
        if unknown:
            raise InputError(f"--configs: unknown config(s) {', '.join(unknown)} (known: {', '.join(configs)})")
        custom = [spec.partition("=")[0] for spec in args.config]
        configs = {name: configs[name] for name in dict.fromkeys(args.configs + custom)}
    return list(configs.items())


# ----------------------------------------------------------------------------------------------
# The sweep: runs, their folders and the manifest


@dataclass
class Run:
    config: str
    seed: int
    folder: Path
    flags: list                      # main.py flags of the config (dataset, r, config, extras)
    status: str = "new"              # new | partial | done

    @property
    def label(self) -> str:
        return f"{self.config} seed {self.seed}"

    def main_argv(self, device: str) -> list:
        argv = self.flags + ["--random_seed", str(self.seed), "--path_name", "run",
                             "--result_dir", str(self.folder), "--device", device]
        return argv + (["--resume"] if self.status == "partial" else [])


def run_status(folder: Path) -> str:
    if (folder / "run.test.json").is_file():
        return "done"
    return "partial" if (folder / "run.last.pt").is_file() else "new"


def update_manifest(out: Path, dataset: str, configs) -> None:
    """Record each config's flags in OUT/experiments.json; a config rerun with other flags is refused."""
    path = out / MANIFEST
    manifest = read_manifest(out) if path.exists() else {"dataset": dataset, "configs": []}
    if manifest["dataset"] != dataset:
        raise InputError(f"{path}: this folder holds a {manifest['dataset']} sweep; use another --out for {dataset}")
    known = {entry["name"]: entry["flags"] for entry in manifest["configs"]}
    for name, flags in configs:
        if name in known and known[name] != flags:
            raise InputError(f"{path}: config {name} ran with flags {shlex.join(known[name])!r}, now "
                             f"{shlex.join(flags)!r}; use another --out or another config name")
        if name not in known:
            manifest["configs"].append({"name": name, "flags": flags})
    with atomic_write(path) as handle:
        json.dump(manifest, handle, indent=1)


def read_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: no sweep manifest here; give the OUT folder of an experiments.py sweep")
    try:
        manifest = json.loads(path.read_text())
        assert isinstance(manifest["dataset"], str)
        assert all(isinstance(entry["name"], str) and isinstance(entry["flags"], list)
                   for entry in manifest["configs"])
    except (ValueError, KeyError, TypeError, AssertionError):
        raise InputError(f"{path}: not a valid sweep manifest (written by experiments.py)") from None
    return manifest


def plan_runs(out: Path, dataset: str, configs, seeds, extra_flags) -> list:
    """Every (config, seed) run, with the full main.py flags of its config."""
    base = ["--dataset", dataset]
    if dataset in PUBLISHED_R:
        base += ["--r", str(PUBLISHED_R[dataset])]
    configs = [(name, base + flags + extra_flags) for name, flags in configs]
    update_manifest(out, dataset, configs)
    runs = []
    for name, flags in configs:
        for seed in seeds:
            folder = out / name / f"seed{seed}"  # as given: the log's "Save:" lines stay short
            runs.append(Run(name, seed, folder, flags, run_status(folder)))
    return runs


def last_line(run: Run) -> str:
    """The last non-empty line of the run's stderr, else of its log: why it failed."""
    for name in ("run.err", "run.out"):
        path = run.folder / name
        if path.is_file():
            lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return lines[-1]
    return "(no output)"


def start_run(command, env, folder, cwd=None) -> subprocess.Popen:
    """Start one main.py command; it writes its own log (run.out), its stderr goes to run.err.

    The child runs in its own session so that a terminal's Ctrl-C reaches it only through the
    driver: one SIGTERM, which main.py turns into a saved state and a clean exit (SIGINT would not
    do: a shell starts background jobs with SIGINT ignored, and children inherit that).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "run.err", "a") as err:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def run_environment(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("PYTHONSTARTUP", None)
    return env


def write_run_record(run: Run, command, device, threads) -> None:
    with atomic_write(run.folder / "run.json") as handle:
        json.dump({"config": run.config, "seed": run.seed, "command": command, "cwd": os.getcwd(),
                   "device": device, "threads": threads, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                   "resumed": run.status == "partial"}, handle, indent=1)


def default_devices() -> list:
    import torch  # only here: the report and --help need no torch

    count = torch.cuda.device_count()
    return [f"cuda:{index}" for index in range(count)] if count else ["cpu"]


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Progress:
    """A progress bar over runs: done / running / failed, with tqdm's ETA."""

    def __init__(self, runs, k):
        from tqdm import tqdm

        self.k = str(k)
        self.done = sum(run.status == "done" for run in runs)
        self.failed, self.running = [], 0
        self.stopping = False  # set once the sweep passes a Ctrl-C on: runs ending then were stopped, not failed
        self.lock = threading.Lock()
        self.bar = tqdm(total=len(runs), initial=self.done, desc="runs", unit="run", file=sys.stderr,
                        dynamic_ncols=True)
        self._postfix()

    def _postfix(self):
        self.bar.set_postfix_str(f"running {self.running}, failed {len(self.failed)}")

    def started(self, run):
        with self.lock:
            self.running += 1
            self._postfix()

    def finished(self, run, returncode):
        with self.lock:
            self.running -= 1
            if returncode == 0 and run_status(run.folder) == "done":
                test = json.loads((run.folder / "run.test.json").read_text())
                recall = test["test"].get(self.k, {}).get("recall", math.nan)
                self.bar.write(f"done: {run.label} (best epoch {test['best_epoch']}, "
                               f"test Recall@{self.k} {recall:.4f})", file=sys.stderr)
                self.bar.update(1)
            elif self.stopping:
                self.bar.write(f"stopped: {run.label}: {last_line(run)}", file=sys.stderr)
            else:
                self.failed.append(run)
                self.bar.write(f"failed: {run.label} (exit code {returncode}): {last_line(run)}", file=sys.stderr)
            self._postfix()

    def close(self):
        self.bar.close()


def execute_local(runs, devices, jobs, progress) -> None:
    """A pool of `jobs` workers; each run goes to the device with the fewest runs on it."""
    threads = max(1, available_cores() // jobs)
    load = {device: 0 for device in devices}
    lock = threading.Lock()
    children = {}

    def work(run):
        with lock:
            device = min(devices, key=lambda name: load[name])
            load[device] += 1
        command = [sys.executable, str(MAIN)] + run.main_argv(device)
        write_run_record(run, command, device, threads)
        progress.started(run)
        try:
            child = children[run.label] = start_run(command, run_environment(threads), run.folder, os.getcwd())
            returncode = child.wait()
        finally:
            with lock:
                load[device] -= 1
                children.pop(run.label, None)
        progress.finished(run, returncode)

    pool = ThreadPoolExecutor(max_workers=jobs)
    pending = {pool.submit(work, run) for run in runs}
    try:
        while pending:
            _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
    except KeyboardInterrupt:
        progress.stopping = True
        for future in pending:
            future.cancel()
        for child in list(children.values()):
            child.send_signal(signal.SIGTERM)  # main.py keeps the state of its finished epochs
        pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)


def execute_ray(runs, args, progress) -> None:
    """One Ray task per run. OUT, --data_dir and this repository must be at the same paths on every node."""
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray: pip install -r requirements-ray.txt") from None
    # Workers import this module by name: the repository goes on their path.
    ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}})
    try:
        gpus = args.gpus_per_run
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        task = ray.remote(num_cpus=args.cpus_per_run, num_gpus=gpus, max_retries=0)(_ray_run)
        futures = {}
        for run in runs:
            device = "cuda" if gpus > 0 else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES for the task
            write_run_record(run, ["<ray worker python>", str(MAIN)] + run.main_argv(device), device,
                             args.cpus_per_run)
            futures[task.remote(str(MAIN), run.main_argv(device), os.getcwd(), args.cpus_per_run,
                                str(run.folder))] = run
            progress.started(run)
        try:
            while futures:
                ready, _ = ray.wait(list(futures), num_returns=1)
                run = futures.pop(ready[0])
                progress.finished(run, ray.get(ready[0]))
        except KeyboardInterrupt:
            progress.stopping = True
            for future in futures:
                ray.cancel(future)  # KeyboardInterrupt in the task: it passes SIGTERM on to main.py
            ray.wait(list(futures), num_returns=len(futures), timeout=60)
            raise
    finally:
        ray.shutdown()


def _ray_run(main_path, argv, cwd, threads, folder) -> int:
    """Body of a Ray task: main.py under the worker's own Python; Ray's cancel is passed on as SIGTERM."""
    child = start_run([sys.executable, main_path] + argv, run_environment(threads), folder, cwd=cwd)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGTERM)
        return child.wait()


def sweep(options: Options) -> int:
    args = options.args
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a folder")
    configs = resolve_configs(args)
    seeds = resolve_seeds(args.seeds)
    out.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(out, args.dataset, configs, seeds, options.extra_flags)
    names = [entry["name"] for entry in read_manifest(out)["configs"]]
    if args.baseline and args.baseline not in names:  # checked now, not after hours of training
        raise InputError(f"--baseline {args.baseline}: not a config of this sweep ({', '.join(names)})")
    todo = [run for run in runs if run.status != "done"]
    print(f"{len(runs)} runs ({len(configs)} configs x {len(seeds)} seeds): {len(runs) - len(todo)} finished, "
          f"{sum(run.status == 'partial' for run in todo)} to resume, "
          f"{sum(run.status == 'new' for run in todo)} to start", file=sys.stderr)
    progress = Progress(runs, args.k)
    try:
        if todo and args.executor == "ray":
            execute_ray(todo, args, progress)
        elif todo:
            execute_local(todo, args.devices or default_devices(), args.jobs, progress)
    except KeyboardInterrupt:
        progress.close()
        finished = sum(run_status(run.folder) == "done" for run in runs)
        raise InputError(f"interrupted: {finished} of {len(runs)} runs finished; rerun the same command to "
                         f"continue the others from their last finished epoch") from None
    progress.close()
    report(out, args.baseline, args.k)
    if progress.failed:
        print(f"{len(progress.failed)} run(s) failed: "
              + "; ".join(f"{run.label}: {last_line(run)}" for run in progress.failed), file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------
# The report


@dataclass
class RunResult:
    seed: int
    log: str                         # path of run.out relative to OUT
    best_epoch: int
    train_seconds: float | None
    test: dict                       # metric -> value at k
    per_user: dict                   # metric -> {user id: value at max(top_k)}
    curve: list = field(default_factory=list)  # [(epoch, validation recall@k)]


def read_run(out: Path, config: str, folder: Path, k: int) -> RunResult:
    test = json.loads((folder / "run.test.json").read_text())
    if str(k) not in test["test"]:
        raise InputError(f"{folder / 'run.test.json'}: no metrics at k = {k} (has {', '.join(test['test'])})")
    log = compare.parse_log(folder / "run.out")  # the validation curve, and older runs' training time
    train_seconds = test.get("train_seconds", log.training_seconds)
    per_user = {metric: {} for metric in METRICS}
    users_path = folder / "run.test_users.csv"
    if users_path.is_file():
        lines = users_path.read_text().splitlines()
        for line in lines[1:]:
            user, *values = line.split(",")
            for metric, value in zip(METRICS, values):
                per_user[metric][user] = float(value)
    curve = [(record.epoch, record.metrics[k][1]) for record in log.epochs if k in record.metrics]
    return RunResult(seed=int(folder.name[len("seed"):]), log=str((folder / "run.out").relative_to(out)),
                     best_epoch=test["best_epoch"], train_seconds=train_seconds,
                     test={metric: test["test"][str(k)][metric] for metric in METRICS},
                     per_user=per_user, curve=curve)


def collect(out: Path, k: int):
    """(dataset, [(name, flags, [RunResult of finished runs, by seed])]) from OUT."""
    manifest = read_manifest(out)
    configs = []
    for entry in manifest["configs"]:
        folders = sorted((folder for folder in (out / entry["name"]).glob("seed*")
                          if re.fullmatch(r"seed-?\d+", folder.name) and run_status(folder) == "done"),
                         key=lambda folder: int(folder.name[len("seed"):]))
        configs.append((entry["name"], entry["flags"], [read_run(out, entry["name"], f, k) for f in folders]))
    return manifest["dataset"], configs


def describe(values) -> dict:
    """n, mean, sample std (ddof 1) and the 95% t interval of the mean; None where n is too small."""
    import numpy as np
    from scipy import stats

    values = np.asarray([value for value in values if value is not None and math.isfinite(value)], dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else None
    std = float(values.std(ddof=1)) if n > 1 else None
    ci = None
    if n > 1:
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"n": n, "mean": mean, "std": std, "ci95": ci}


def paired_tests(runs, baseline_runs, metric):
    """(p of a paired t-test over the common seeds, p of a Wilcoxon signed-rank test over users).

    Users' values are averaged over the common seeds; only users present in all those runs count.
    None where a test is undefined (fewer than 2 seeds, no users, all differences zero).
    """
    import numpy as np
    from scipy import stats

    mine, theirs = {run.seed: run for run in runs}, {run.seed: run for run in baseline_runs}
    seeds = sorted(set(mine) & set(theirs))
    p_seed = p_user = None
    x = [mine[seed].test[metric] for seed in seeds]
    y = [theirs[seed].test[metric] for seed in seeds]
    if len(seeds) >= 2 and any(a != b for a, b in zip(x, y)):
        p_seed = float(stats.ttest_rel(x, y).pvalue)
    if seeds:
        tables = [mine[seed].per_user[metric] for seed in seeds] + [theirs[seed].per_user[metric] for seed in seeds]
        users = sorted(set.intersection(*(set(table) for table in tables)))
        if users:
            ux = np.mean([[mine[seed].per_user[metric][user] for user in users] for seed in seeds], axis=0)
            uy = np.mean([[theirs[seed].per_user[metric][user] for user in users] for seed in seeds], axis=0)
            if np.any(ux != uy):
                p_user = float(stats.wilcoxon(ux, uy).pvalue)
    return p_seed, p_user


def summarize(out: Path, baseline=None, k=20) -> dict:
    """The summary.json dictionary of the finished runs in OUT."""
    dataset, configs = collect(out, k)
    names = [name for name, _, _ in configs]
    baseline = baseline or (names[0] if names else None)
    if baseline not in names:
        raise InputError(f"--baseline {baseline}: not a config of {out} (configs: {', '.join(names)})")
    base_runs = next(runs for name, _, runs in configs if name == baseline)
    summary = {"dataset": dataset, "k": k, "baseline": baseline, "configs": []}
    for name, flags, runs in configs:
        stats = {metric: describe([run.test[metric] for run in runs]) for metric in METRICS}
        for key in ("best_epoch", "train_seconds"):
            stats[key] = describe([getattr(run, key) for run in runs])
        entry = {"name": name, "flags": flags, "seeds": len(runs),
                 "runs": [{"seed": run.seed, "log": run.log, "best_epoch": run.best_epoch,
                           "train_seconds": run.train_seconds, "test": run.test} for run in runs],
                 "mean": {key: value["mean"] for key, value in stats.items()},
                 "std": {key: value["std"] for key, value in stats.items()},
                 "ci95": {metric: stats[metric]["ci95"] for metric in METRICS},
                 "vs_baseline": None}
        if name != baseline and runs and base_runs:
            comparison = {}
            for metric in METRICS:
                base_mean = stats_mean(base_runs, metric)
                p_seed, p_user = paired_tests(runs, base_runs, metric)
                comparison[metric] = {"rel_diff": (entry["mean"][metric] - base_mean) / base_mean if base_mean else None,
                                      "p_seed_ttest": p_seed, "p_user_wilcoxon": p_user}
            entry["vs_baseline"] = {"recall_rel_diff": comparison["recall"]["rel_diff"],
                                    "p_seed_ttest": comparison["recall"]["p_seed_ttest"],
                                    "p_user_wilcoxon": comparison["recall"]["p_user_wilcoxon"],
                                    "by_metric": comparison}
        summary["configs"].append(entry)
    return summary


def stats_mean(runs, metric) -> float:
    return sum(run.test[metric] for run in runs) / len(runs)


def _num(value, digits=4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _p(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:+.2f}%"


def table_rows(summary):
    """Rows of the two report tables: metrics over seeds, and each config against the baseline."""
    k = summary["k"]
    metric_rows, test_rows = [], []
    for entry in summary["configs"]:
        cells = [entry["name"], str(entry["seeds"])]
        for metric in METRICS:
            mean, std, ci = entry["mean"][metric], entry["std"][metric], entry["ci95"][metric]
            cell = _num(mean) + ("" if std is None else f" ± {std:.4f}")
            if metric != "precision":
                cell += "" if ci is None else f" [{ci[0]:.4f}, {ci[1]:.4f}]"
            cells.append(cell)
        cells += [_num(entry["mean"]["best_epoch"], 0), _num(entry["mean"]["train_seconds"], 0)]
        metric_rows.append(cells)
        versus = entry["vs_baseline"]
        if versus is not None:
            row = [entry["name"]]
            for metric in ("recall", "ndcg"):
                m = versus["by_metric"][metric]
                row += [_pct(m["rel_diff"]), _p(m["p_seed_ttest"]), _p(m["p_user_wilcoxon"])]
            test_rows.append(row)
    metric_head = ["config", "seeds", f"Precision@{k}", f"Recall@{k} [95% CI]", f"NDCG@{k} [95% CI]",
                   "best epoch", "train s"]
    test_head = ["config", f"ΔRecall@{k}", "p (t, seeds)", "p (Wilcoxon, users)",
                 f"ΔNDCG@{k}", "p (t, seeds)", "p (Wilcoxon, users)"]
    return (metric_head, metric_rows), (test_head, test_rows)


def markdown(summary) -> str:
    (mh, mr), (th, tr) = table_rows(summary)

    def table(head, rows):
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])

    text = [f"## {summary['dataset']}: test metrics at k = {summary['k']} over seeds", "",
            "mean ± sample std over seeds; [95% confidence interval of the mean, t distribution]; "
            "best epoch and training seconds are means.", "", table(mh, mr), "",
            f"## Against {summary['baseline']}", "",
            "Δ: relative difference of the means; p (t, seeds): paired t-test over the seeds both configs "
            "finished; p (Wilcoxon, users): Wilcoxon signed-rank test over test users, each user's metric "
            "averaged over those seeds.", "", table(th, tr), ""]
    return "\n".join(text)


def latex(summary) -> str:
    (mh, mr), (th, tr) = table_rows(summary)

    def esc(text):
        return (text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%")
                .replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--").replace("@", "@"))

    def table(head, rows, caption):
        spec = "l" + "r" * (len(head) - 1)
        body = [r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(caption)}}}", rf"\begin{{tabular}}{{{spec}}}",
                r"\toprule", " & ".join(esc(cell) for cell in head) + r" \\", r"\midrule"]
        body += [" & ".join(esc(cell) for cell in row) + r" \\" for row in rows]
        return "\n".join(body + [r"\bottomrule", r"\end{tabular}", r"\end{table}"])

    return "\n\n".join([
        "% needs \\usepackage{booktabs}",
        table(mh, mr, f"{summary['dataset']}: test metrics at k = {summary['k']}, mean ± std over seeds "
                      f"[95% CI]"),
        table(th, tr, f"{summary['dataset']}: against {summary['baseline']} (relative difference of the "
                      f"means; paired t-test over seeds; Wilcoxon signed-rank test over users)")]) + "\n"


def plot(out: Path, summary, k) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    _, configs = collect(out, k)
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for name, _, runs in configs:
        curves = [dict(run.curve) for run in runs if run.curve]
        if not curves:
            continue
        epochs = sorted(set().union(*curves))
        values = [[curve[epoch] for curve in curves if epoch in curve] for epoch in epochs]
        line, = axis.plot(epochs, [np.mean(v) for v in values], label=f"{name} (n={len(curves)})", linewidth=1)
        axis.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], alpha=0.2,
                          color=line.get_color(), linewidth=0)
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"validation Recall@{k}")
    axis.set_title(f"{summary['dataset']}: validation Recall@{k}, mean over seeds, min-max band")
    axis.legend(fontsize="small")
    figure.tight_layout()
    with atomic_write(out / "curves.png", "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    entries = [entry for entry in summary["configs"] if entry["seeds"]]
    for axis, metric, title in zip(axes, ("recall", "ndcg"), (f"Recall@{k}", f"NDCG@{k}")):
        positions = np.arange(len(entries))
        means = [entry["mean"][metric] for entry in entries]
        errors = [entry["std"][metric] or 0 for entry in entries]
        axis.bar(positions, means, yerr=errors, capsize=4, color="lightsteelblue", edgecolor="black")
        for position, entry in zip(positions, entries):
            seeds = [run["test"][metric] for run in entry["runs"]]
            axis.plot([position] * len(seeds), seeds, "k.", markersize=4)
        low = min(min(run["test"][metric] for run in entry["runs"]) for entry in entries) if entries else 0
        axis.set_ylim(low * 0.97, None)
        axis.set_xticks(positions, [entry["name"] for entry in entries], rotation=30, ha="right")
        axis.set_title(f"test {title}: mean ± std, dots = seeds")
        axis.set_ylabel("(axis does not start at 0)", fontsize="small")
    figure.tight_layout()
    with atomic_write(out / "bars.png", "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)


def report(out: Path, baseline=None, k=20) -> dict:
    """Write summary.md/.tex/.json, curves.png and bars.png into OUT; print the markdown."""
    summary = summarize(out, baseline, k)
    if not any(entry["seeds"] for entry in summary["configs"]):
        print(f"no finished runs in {out} yet: nothing to report", file=sys.stderr)
        return summary
    text = markdown(summary)
    with atomic_write(out / "summary.md") as handle:
        handle.write(text)
    with atomic_write(out / "summary.tex") as handle:
        handle.write(latex(summary))
    with atomic_write(out / "summary.json") as handle:
        json.dump(summary, handle, indent=1, allow_nan=False)
    plot(out, summary, k)
    print(text)
    print(f"written: {', '.join(str(out / name) for name in ('summary.md', 'summary.tex', 'summary.json', 'curves.png', 'bars.png'))}",
          file=sys.stderr)
    return summary


def _terminate(signum, frame):
    raise KeyboardInterrupt  # a SIGTERM stops the sweep as Ctrl-C does: runs save their state


def main(argv=None) -> int:
    options = parse_args(argv)
    try:
        if options.args.report:
            report(Path(options.args.report), options.args.baseline, options.args.k)
            return 0
        return sweep(options)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was lost: rerun the same command", file=sys.stderr)
        return 2


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main())
