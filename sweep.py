"""The sweep runner of experiments.py: every (config, seed) is one run of main.py in its own folder,
run by a local pool (here) or by Ray (sweep_ray.py), resumed after a stop, each failure reported;
each run is a child process started by run_process.py.

    python experiments.py --dataset ML-100K --seeds 5 --jobs 2 --out results/ML-100K   # the command

Layout of OUT (names in run_files.py): experiments.json (the manifest: the dataset and each config's full
main.py flags, `{seed}` placeholders as given), and per run OUT/<config>/seed<S>/: run.out (the log),
run.test.json (its presence marks a finished run), run.test_users.csv (per-user test metrics),
run.pt and run.last.pt (checkpoints), run.err (stderr) and run.json (how it was started, `{seed}`
filled in). A run with only run.last.pt continues with `--resume`.
"""
import argparse
import json
import os
import re
import shlex
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from catalog import PUBLISHED_R
from run_files import RunPaths, merged_manifest, run_status, seed_folder, write_manifest
from run_process import MAIN, Run, last_line, run_environment, run_threads, start_run
from sweep_ray import execute_ray, init_ray
from utils import InputError, atomic_write

# main.py flags that the sweep sets itself for every run.
OWN_FLAGS = ("--random_seed", "--path_name", "--result_dir", "--device", "--resume")
# In a config's flags, replaced by each run's seed (a data folder drawn anew per seed); the manifest keeps it.
SEED_PLACEHOLDER = "{seed}"


def with_seed(flags, seed) -> list:
    """A config's flags as one run gives them to main.py: SEED_PLACEHOLDER replaced by its seed."""
    return [flag.replace(SEED_PLACEHOLDER, str(seed)) for flag in flags]


def plan_runs(out: Path, dataset: str, configs, seeds, extra_flags, made_later=None):
    """(every (config, seed) run with the full main.py flags of its config, the manifest to write).

    The manifest holds the flags as given, each run its own with `{seed}` filled in. Checks first,
    writes nothing: a config's flags changed since OUT ran it, split files missing (except for the
    runs whose data `made_later(flags)` says the sweep makes before they start)."""
    base = ["--dataset", dataset]
    if dataset in PUBLISHED_R:
        base += ["--r", str(PUBLISHED_R[dataset])]
    configs = [(name, base + flags + extra_flags) for name, flags in configs]
    manifest = merged_manifest(out, dataset, configs)
    runs = []
    for name, flags in configs:
        for seed in seeds:
            folder = seed_folder(out, name, seed)  # as given: the log's "Save:" lines stay short
            runs.append(Run(name, seed, folder, with_seed(flags, seed), run_status(folder)))
    todo = {(run.config, tuple(run.flags)): None for run in runs
            if run.status != "done" and not (made_later and made_later(run.flags))}
    check_split_files([(name, list(flags)) for name, flags in todo])
    return runs, manifest


def check_split_files(configs) -> None:
    """InputError naming the first config whose split files are missing: before any run starts, not
    after each has loaded torch. A config whose flags main.py will refuse is left to its run's error."""
    import cli
    from catalog import missing_split_message

    for name, flags in configs:
        try:
            main_args = cli.parse_main_flags(flags)
        except argparse.ArgumentError:  # a bad flag: main.py's own message, in the run
            continue
        message = missing_split_message(main_args.data_dir, main_args.dataset, cli.split_names(main_args))
        if message:
            raise InputError(f"config {name}: {message}")


def write_run_record(run: Run, command, device, threads, placement=None) -> None:
    """run.json: how the run was started; `placement` adds the GPU's name and its CUDA_VISIBLE_DEVICES."""
    record = {"config": run.config, "seed": run.seed, "command": command, "cwd": os.getcwd(),
              "device": device, "threads": threads, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "resumed": run.status == "partial"}
    if placement is not None and placement.gpu is not None:
        record.update(gpu=placement.name, cuda_visible_devices=placement.gpu)
    with atomic_write(RunPaths.in_sweep(run.folder).record) as handle:
        json.dump(record, handle, indent=1)


@dataclass
class Placement:
    """Where a run goes: `device` in the driver's view (cpu, cuda:N); a GPU run's child sees only that
    GPU (CUDA_VISIBLE_DEVICES=gpu, its physical id) and runs on cuda:0 there."""
    device: str
    gpu: str | None = None            # physical id (or UUID) for CUDA_VISIBLE_DEVICES; None: cpu
    name: str | None = None           # the GPU's name, for run.json

    @property
    def child_device(self) -> str:
        return "cpu" if self.gpu is None else "cuda:0"


def gpu_name(index: int) -> str:
    import torch

    return torch.cuda.get_device_name(index)


def placements(names) -> list:
    """--devices (cpu, cuda, cuda:N in this process's view) as Placements; an unusable one is an InputError.

    A child sees one GPU: the physical id is this process's CUDA_VISIBLE_DEVICES entry for index N
    (N itself when unset), so each run creates a CUDA context on its own GPU only.
    """
    result = []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = None if visible is None else [entry.strip() for entry in visible.split(",") if entry.strip()]
    for name in names:
        if name == "cpu":
            result.append(Placement("cpu"))
            continue
        match = re.fullmatch(r"cuda(?::(\d+))?", name)
        if match is None:
            raise InputError(f"--devices {name}: not a device; use cpu, cuda or cuda:N")
        index = int(match.group(1) or 0)
        count = cuda_device_count()
        if index >= count:
            raise InputError(f"--devices {name}: {'no' if count == 0 else f'only {count}'} CUDA GPU(s) usable here"
                             + ("" if count else "; use --devices cpu"))
        gpu = str(index) if visible is None else visible[index]
        result.append(Placement(f"cuda:{index}", gpu, gpu_name(index)))
    return result


def cuda_device_count() -> int:
    import torch  # only here: the report and --help need no torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_devices() -> list:
    """Every GPU torch can use, else cpu, saying once why where an NVIDIA GPU is present but unusable."""
    import devices

    gpus = devices.cuda_devices() if cuda_device_count() else []
    if not gpus:
        warning = devices.cuda_unusable_warning()
        if warning:
            print(warning, file=sys.stderr)
    return gpus or ["cpu"]


class SweepProgressBar:
    """A progress bar over runs: done / running / failed, with tqdm's ETA."""

    def __init__(self, runs, k):
        from tqdm import tqdm

        self.k = str(k)
        self.done = sum(run.status == "done" for run in runs)
        self.failed, self.running = [], 0
        self.started_labels = set()  # the runs counted as running (a Ray run only once its task started it)
        self.stopping = False  # set once the sweep passes a Ctrl-C on: runs ending then were stopped, not failed
        self.lock = threading.Lock()
        self.bar = tqdm(total=len(runs), initial=self.done, desc="runs", unit="run", file=sys.stderr,
                        dynamic_ncols=True)
        self._postfix()

    def _postfix(self):
        self.bar.set_postfix_str(f"running {self.running}, failed {len(self.failed)}")

    def started(self, run):
        with self.lock:
            self.started_labels.add(run.label)
            self.running += 1
            self._postfix()

    def finished(self, run, returncode, why=None):
        """Count a run that ended: done, stopped (during a stop), else failed (returncode None: never
        started, unless `why` says what else became of it)."""
        with self.lock:
            if run.label in self.started_labels:
                self.started_labels.discard(run.label)
                self.running -= 1
            # A run cancelled in a stop may have finished all the same: its folder tells.
            if run_status(run.folder) == "done" and (returncode == 0 or self.stopping):
                self.bar.write(f"done: {run.label}{self._result(run)}", file=sys.stderr)
                self.bar.update(1)
            elif self.stopping and returncode is not None:
                self.bar.write(f"stopped: {run.label}: {last_line(run)}", file=sys.stderr)
            else:
                self.failed.append(run)
                why = why or ("could not start" if returncode is None else f"exit code {returncode}")
                self.bar.write(f"failed: {run.label} ({why}): {last_line(run)}", file=sys.stderr)
            self._postfix()

    def _result(self, run) -> str:
        """' (best epoch E, test Recall@k R)' from run.test.json; the report names a damaged file."""
        try:
            test = json.loads(RunPaths.in_sweep(run.folder).test.read_text())
            return (f" (best epoch {test['best_epoch']}, "
                    f"test Recall@{self.k} {float(test['test'][self.k]['recall']):.4f})")
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def write(self, line: str) -> None:
        """A line above the bar (a line printed while the bar is drawn would start in its middle)."""
        self.bar.write(line, file=sys.stderr)

    def close(self):
        self.bar.close()


def start_failure(exc: BaseException) -> str:
    """Why a run could not start, in one line: its folder or run.json not writable, a full disk, ..."""
    if isinstance(exc, OSError):
        # os.replace (atomic_write) names the temporary file first and the target second
        return f"{exc.filename2 or exc.filename or 'its folder'}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def execute_local(runs, places, jobs, progress, threads=1) -> None:
    """A pool of `jobs` workers; each run goes to the Placement with the fewest runs on it.

    Every run ends in `progress`: finished, failed (also when it cannot start) or stopped. An error
    in the pool itself is raised once the runs have ended, never dropped.
    """
    load = [0] * len(places)
    lock = threading.Lock()
    children = {}

    def work(run):
        with lock:
            slot = min(range(len(places)), key=lambda index: load[index])
            load[slot] += 1
        place = places[slot]
        returncode = None
        progress.started(run)
        try:
            command = [sys.executable, str(MAIN)] + run.main_argv(place.child_device)
            threads_of_run = run_threads(run, threads)
            write_run_record(run, command, place.device, threads_of_run, place)
            child = children[run.label] = start_run(command, run_environment(threads_of_run, place.gpu),
                                                    run.folder, os.getcwd())
            returncode = child.wait()
        except Exception as exc:  # noqa: BLE001 - any failure to start is this run's failure, reported
            run.failure = start_failure(exc)
        finally:
            with lock:
                load[slot] -= 1
                children.pop(run.label, None)
        progress.finished(run, returncode)

    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(work, run) for run in runs]
    pending = set(futures)
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
    for future in futures:
        future.result()  # a worker's own error (not a run's) is raised, not lost


class Stopped(InputError):
    """A sweep stopped by Ctrl-C or SIGTERM once its runs have stopped: how many of them had finished."""

    def __init__(self, finished: int, total: int):
        self.finished, self.total = finished, total
        super().__init__(self.line())

    def line(self, reported: str = "") -> str:
        if self.finished == self.total:
            return f"interrupted after all {self.total} runs had finished{reported}; nothing is left to run"
        return (f"interrupted: {self.finished} of {self.total} runs finished{reported}; rerun the same command to "
                f"continue the others from their last finished epoch")


def original_ratings_sweep(args, extra_flags):
    """The experiments.py command of this sweep restricted to the configs on the original ratings
    (LightGCN and ReFINe), or None where the original train split is missing too."""
    import cli
    from catalog import split_path

    try:
        data_dir = cli.parse_main_flags(["--dataset", args.dataset] + list(extra_flags)).data_dir
    except argparse.ArgumentError:
        return None
    if not split_path(data_dir, args.dataset, "train_original").is_file():
        return None
    command = ["python", "experiments.py", "--dataset", args.dataset, "--out", str(args.out),
               "--seeds", *[str(seed) for seed in getattr(args, "seeds", ["5"])]]
    command = shlex.join(command) + ' --configs lightgcn-original --config refine-original="--dataset_augment 0"'
    return command + (" -- " + shlex.join(extra_flags) if extra_flags else "")


def sweep(args, configs, seeds, extra_flags, maker=None) -> list:
    """Run every unfinished (config, seed) of `configs` x `seeds` in OUT (args.out); the failed runs.

    `maker` (optional) makes data folders that the runs read before any run starts: its
    `pending(flags)` names what a run with these flags still needs made (None: nothing),
    `check(needs)` raises InputError for what cannot be made (before anything is written), and
    `make(needs, say)` makes them, a line each through `say`. A stop (Ctrl-C, SIGTERM) is passed on
    to the runs and ends as an InputError that says how many runs finished.
    """
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a folder")
    pending = maker.pending if maker else (lambda flags: None)
    try:
        runs, manifest = plan_runs(out, args.dataset, configs, seeds, extra_flags,
                                   made_later=lambda flags: pending(flags) is not None)
    except InputError as error:
        hint = original_ratings_sweep(args, extra_flags)
        if hint and f"{args.dataset}_train_augment.csv" in str(error):
            raise InputError(f"{error}; or sweep the configs that need no LLM-refined file now: `{hint}`") from None
        raise
    if args.baseline:  # checked now (a name of this sweep, one per model), not after hours of training
        import report

        report.baseline_of_each(out, [(entry["name"], entry["flags"], []) for entry in manifest["configs"]],
                                args.baseline)
    todo = [run for run in runs if run.status != "done"]
    needs = {}  # what to make -> the first run that needs it (its config names it in messages)
    for run in todo:
        need = pending(run.flags)
        if need is not None:
            needs.setdefault(need, run)
    if needs:
        maker.check(needs)
    places = placements(args.devices or default_devices()) if todo and args.executor == "local" else None
    if todo and args.executor == "ray":  # an unreachable cluster is said before anything is written
        import ray

        init_ray(ray, args)
    if needs:
        maker.make(needs, lambda line: print(line, file=sys.stderr, flush=True))
        check_split_files([(run.config, run.flags) for run in needs.values()])  # made as main.py reads them
    write_manifest(out, manifest)
    print(f"{len(runs)} runs ({len(configs)} configs x {len(seeds)} seeds): {len(runs) - len(todo)} finished, "
          f"{sum(run.status == 'partial' for run in todo)} to resume, "
          f"{sum(run.status == 'new' for run in todo)} to start", file=sys.stderr)
    progress = SweepProgressBar(runs, args.k)
    try:
        if todo and args.executor == "ray":
            execute_ray(todo, args, progress)
        elif todo:
            execute_local(todo, places, args.jobs, progress, args.threads)
    except KeyboardInterrupt:
        progress.close()
        raise Stopped(sum(run_status(run.folder) == "done" for run in runs), len(runs)) from None
    finally:
        progress.close()  # before any error line: it then starts on a line of its own
    return progress.failed
