"""The sweep runner of experiments.py: every (config, seed) is one run of main.py in its own folder,
run by a local pool or by Ray, resumed after a stop, each failure reported.

    python experiments.py --dataset ML-100K --seeds 5 --jobs 2 --out results/ML-100K   # the command

Layout of OUT: experiments.json (the manifest: the dataset and each config's full main.py flags),
and per run OUT/<config>/seed<S>/: run.out (the log), run.test.json (its presence marks a finished
run), run.test_users.csv (per-user test metrics), run.pt and run.last.pt (checkpoints), run.err
(stderr) and run.json (how it was started). A run with only run.last.pt continues with `--resume`.
"""
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from utils import InputError, atomic_write

ROOT = Path(__file__).resolve().parent
MAIN = ROOT / "main.py"
MANIFEST = "experiments.json"

# The published --r of each dataset (SPEC 1.1); main.py's own default (100) elsewhere.
PUBLISHED_R = {"ML-100K": 100, "ML-1M": 250, "Netflix-1M": 300}

# main.py flags that the sweep sets itself for every run.
OWN_FLAGS = ("--random_seed", "--path_name", "--result_dir", "--device", "--resume")
METRICS = ("precision", "recall", "ndcg")


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
    except ValueError:
        manifest = None
    if not valid_manifest(manifest):
        raise InputError(f"{path}: not a valid sweep manifest (written by experiments.py)")
    return manifest


def valid_manifest(manifest) -> bool:
    """{"dataset": str, "configs": [{"name": str, "flags": [str, ...]}, ...]}, as update_manifest writes it."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("dataset"), str) \
            or not isinstance(manifest.get("configs"), list):
        return False
    return all(isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("flags"), list)
               and all(isinstance(flag, str) for flag in entry["flags"]) for entry in manifest["configs"])


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


class SweepProgressBar:
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


def sweep(args, configs, seeds, extra_flags) -> list:
    """Run every unfinished (config, seed) of `configs` x `seeds` in OUT (args.out); the failed runs.

    A stop (Ctrl-C, SIGTERM) is passed on to the runs and ends as an InputError that says how many
    runs finished.
    """
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(out, args.dataset, configs, seeds, extra_flags)
    names = [entry["name"] for entry in read_manifest(out)["configs"]]
    if args.baseline and args.baseline not in names:  # checked now, not after hours of training
        raise InputError(f"--baseline {args.baseline}: not a config of this sweep ({', '.join(names)})")
    todo = [run for run in runs if run.status != "done"]
    print(f"{len(runs)} runs ({len(configs)} configs x {len(seeds)} seeds): {len(runs) - len(todo)} finished, "
          f"{sum(run.status == 'partial' for run in todo)} to resume, "
          f"{sum(run.status == 'new' for run in todo)} to start", file=sys.stderr)
    progress = SweepProgressBar(runs, args.k)
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
    return progress.failed
