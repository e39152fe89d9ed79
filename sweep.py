"""The sweep runner of experiments.py: every (config, seed) is one run of main.py in its own folder,
run by a local pool or by Ray, resumed after a stop, each failure reported.

    python experiments.py --dataset ML-100K --seeds 5 --jobs 2 --out results/ML-100K   # the command

Layout of OUT (names in run_files.py): experiments.json (the manifest: the dataset and each config's full
main.py flags, `{seed}` placeholders as given), and per run OUT/<config>/seed<S>/: run.out (the log),
run.test.json (its presence marks a finished run), run.test_users.csv (per-user test metrics),
run.pt and run.last.pt (checkpoints), run.err (stderr) and run.json (how it was started, `{seed}`
filled in). A run with only run.last.pt continues with `--resume`.
"""
import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from catalog import PUBLISHED_R
from run_files import SWEEP_PATH_NAME, RunPaths, merged_manifest, run_status, seed_folder, write_manifest
from utils import InputError, atomic_write

ROOT = Path(__file__).resolve().parent
MAIN = ROOT / "main.py"


# main.py flags that the sweep sets itself for every run.
OWN_FLAGS = ("--random_seed", "--path_name", "--result_dir", "--device", "--resume")
# In a config's flags, replaced by each run's seed (a data folder drawn anew per seed); the manifest keeps it.
SEED_PLACEHOLDER = "{seed}"


def with_seed(flags, seed) -> list:
    """A config's flags as one run gives them to main.py: SEED_PLACEHOLDER replaced by its seed."""
    return [flag.replace(SEED_PLACEHOLDER, str(seed)) for flag in flags]


@dataclass
class Run:
    config: str
    seed: int
    folder: Path
    flags: list                      # main.py flags of the run (dataset, r, config, extras; {seed} filled in)
    status: str = "new"              # new | partial | done
    failure: str | None = None       # why it could not start (its folder or run.json not writable)

    @property
    def label(self) -> str:
        return f"{self.config} seed {self.seed}"

    def main_argv(self, device: str) -> list:
        argv = self.flags + ["--random_seed", str(self.seed), "--path_name", SWEEP_PATH_NAME,
                             "--result_dir", str(self.folder), "--device", device]
        return argv + (["--resume"] if self.status == "partial" else [])


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


def last_line(run: Run) -> str:
    """Why the run failed: why it could not start, else the last non-empty line of its stderr, else of its log."""
    if run.failure:
        return run.failure
    paths = RunPaths.in_sweep(run.folder)
    for path in (paths.stderr, paths.log):
        if path.is_file():
            try:
                lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
            except OSError:
                continue
            if lines:
                return lines[-1]
    return "(no output)"


def _load_prctl():
    """libc's prctl on Linux, loaded before any fork (the child may only call it), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
PR_SET_PDEATHSIG = 1


def _end_with_driver(driver_pid: int):
    """preexec_fn: the child gets SIGTERM when the driver dies, even by SIGKILL (Linux), so no run
    goes on alone and a rerun never starts a second writer on its folder. SIGTERM, not SIGKILL:
    main.py saves the state of its finished epochs first."""
    def set_death_signal():
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != driver_pid:  # the driver died before the call: end now
                os.kill(os.getpid(), signal.SIGTERM)
    return set_death_signal


def start_run(command, env, folder, cwd=None, note="") -> subprocess.Popen:
    """Start one main.py command; it writes its own log (run.out), its stderr goes to run.err.

    The child runs in its own session so that a terminal's Ctrl-C reaches it only through the
    driver: one SIGTERM, which main.py turns into a saved state and a clean exit (SIGINT would not
    do: a shell starts background jobs with SIGINT ignored, and children inherit that). It ends
    with the driver (_end_with_driver). The signal is tied to the thread that starts the child,
    so that thread must wait for the child, as the pool's workers and Ray's tasks do.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Written anew by each attempt: an earlier attempt's stop line is not this one's last word. Unlinked
    # first: a run of a lost worker that still writes its stop line writes it into the old file.
    stderr = RunPaths.in_sweep(folder).stderr
    with contextlib.suppress(FileNotFoundError):
        os.unlink(stderr)
    with open(stderr, "w") as err:
        err.write(note)
        err.flush()
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True, preexec_fn=_end_with_driver(os.getpid()))


def run_environment(threads: int, gpu: str | None = None) -> dict:
    """The child's environment: its torch threads, and with `gpu` (a physical id) only that GPU visible."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    env.pop("PYTHONSTARTUP", None)
    return env


def run_threads(run: Run, default: int) -> int:
    """The torch threads of a run: its own `--threads` (config or flags after --), else `default`."""
    threads = default
    for index, flag in enumerate(run.flags):
        value = flag.partition("=")[2] if flag.startswith("--threads=") else \
            (run.flags[index + 1] if flag == "--threads" and index + 1 < len(run.flags) else None)
        if value is not None and value.isdigit() and int(value) > 0:
            threads = int(value)
    return threads


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


# A Ray run lost with its worker or node is started again this many times (it resumes from its state).
RAY_RETRIES = 2


def ray_address_reachable(address, timeout) -> None:
    """InputError at once where nothing listens at a HOST:PORT --ray_address (ray.init would wait forever)."""
    import socket

    host, sep, port = (address or "").rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # auto, a ray:// client address: ray.init's own business, under the watchdog
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"--ray_address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                         f"start one (ray start --head) or give its address") from None


def init_ray(ray, args) -> None:
    """ray.init within --ray_timeout seconds, else one line and exit 2: Ray itself retries forever.

    ray.init sets its own SIGTERM handler (exit with a stack dump, the runs killed): the stop handlers
    are put back, so SIGTERM stops a Ray sweep as Ctrl-C does, through each run's own stop path."""
    import entry

    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    ray_address_reachable(address, args.ray_timeout)
    done = threading.Event()

    def watchdog():
        if not done.wait(args.ray_timeout):
            print(f"error: --ray_address {address or '(a local Ray instance)'}: Ray did not connect within "
                  f"{args.ray_timeout:g} s (--ray_timeout); check the address and that the cluster is up; "
                  f"no run was started", file=sys.stderr, flush=True)
            os._exit(2)  # ray.init cannot be interrupted; nothing of the sweep's runs exists yet

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        # Workers import this module by name: the repository goes on their path.
        ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT),
                                                                         os.environ.get("PYTHONPATH", "")])}})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"--ray_address {address or '(a local Ray instance)'}: Ray could not start or connect "
                         f"({first}); no run was started") from None
    finally:
        done.set()
        entry.install_stop_handlers()


def execute_ray(runs, args, progress) -> None:
    """One Ray task per run, doing what the local pool does: each run's record written where it starts
    (its host, pid, start time), a stop passed to every run through its own stop path (SIGTERM, main.py
    saves its state), a run lost with its worker or node started again (RAY_RETRIES times; it resumes).

    OUT, --data_dir and this repository must be at the same paths on every node; every path the workers
    get is absolute, resolved here (a worker's own working directory is not the driver's)."""
    import ray  # experiments.py checked that it is installed; sweep() connected (init_ray)

    futures = {}
    try:
        gpus = args.gpus_per_run
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        # max_retries: Ray starts a task again only when its worker or node died, not for an error of ours.
        task = ray.remote(num_cpus=args.cpus_per_run, num_gpus=gpus, max_retries=RAY_RETRIES,
                          retry_exceptions=False)(_ray_run)
        token = f"{os.getpid()}-{time.time():.6f}"  # tells this sweep's attempts from earlier ones in run.json
        for run in runs:
            run.folder = Path(os.path.abspath(run.folder))
            # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU: it is cuda:0 there.
            device = "cuda:0" if gpus > 0 else "cpu"
            argv = [flag for flag in run.main_argv(device) if flag != "--resume"]  # the task decides, per attempt
            record = {"config": run.config, "seed": run.seed, "device": device,
                      "threads": run_threads(run, args.cpus_per_run), "sweep": token}
            futures[task.remote(str(MAIN), argv, os.getcwd(), str(run.folder), record)] = run
        _wait_for_ray_runs(ray, futures, progress, token)
    except KeyboardInterrupt:
        progress.stopping = True
        for future in futures:
            ray.cancel(future)  # queued: never starts; running: KeyboardInterrupt in the task, SIGTERM to main.py
        _wait_for_ray_runs(ray, futures, progress, token, stopping=True)
        raise
    finally:
        ray.shutdown()


def _wait_for_ray_runs(ray, futures, progress, token, stopping=False) -> None:
    """Count each run as running once its task has started it (its run.json says so), and as ended with
    what became of it; `stopping`: after the cancel, for as long as the runs take to save their state."""
    deadline = time.monotonic() + 120
    while futures and (not stopping or time.monotonic() < deadline):
        ready, _ = ray.wait(list(futures), num_returns=1, timeout=0.5)
        for run in futures.values():
            if run.label not in progress.started_labels and _started_by(run, token):
                progress.started(run)
        if not ready:
            continue
        run = futures.pop(ready[0])
        returncode, why = None, None
        try:
            returncode = ray.get(ready[0])
        except ray.exceptions.TaskCancelledError:
            returncode = -signal.SIGTERM  # stopped: its folder says how far it got
        except ray.exceptions.RayTaskError as exc:  # our code in the task failed: the run could not start
            run.failure = f"Ray task failed: {str(exc).strip().splitlines()[-1]}"
        except ray.exceptions.RayError as exc:  # the worker or node died under it, every retry too
            why = f"lost with its worker or node, {RAY_RETRIES + 1} attempts"
            run.failure = (f"{type(exc).__name__}: its state is kept, rerun the same command to resume it; "
                           f"its last line: {last_line(run)}")
        progress.finished(run, returncode, why)


def _started_by(run: Run, token: str) -> bool:
    try:
        return json.loads(RunPaths.in_sweep(run.folder).record.read_text()).get("sweep") == token
    except (OSError, ValueError, AttributeError):
        return False


def _lock_free(folder: Path, timeout=120) -> None:
    """Wait until no main.py holds the run's lock: after a lost worker, the run it left may still be
    saving its state (it got SIGTERM), and the next attempt would be refused as a second writer."""
    import fcntl

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fd = os.open(RunPaths.in_sweep(folder).lock, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return  # no lock file: nobody writes
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except OSError:
            time.sleep(0.5)
        finally:
            os.close(fd)


def _ray_run(main_path, argv, cwd, folder, record) -> int:
    """Body of a Ray task: main.py under the worker's own Python, resumed when a state is there (an
    attempt after a lost worker), its record (host, pid, start) in run.json, Ray's cancel passed on as
    SIGTERM. It waits for the child in short steps: a cancel's KeyboardInterrupt only arrives between
    Python steps, never inside a blocking wait."""
    import socket

    folder, paths = Path(folder), RunPaths.in_sweep(folder)
    if paths.test.is_file():
        return 0  # finished by an attempt whose worker was lost just after
    try:
        previous = json.loads(paths.record.read_text())
    except (OSError, ValueError):
        previous = {}
    attempt = previous.get("attempt", 0) + 1 if previous.get("sweep") == record["sweep"] else 1
    _lock_free(folder)
    resume = paths.state.is_file()
    command = [sys.executable, main_path] + argv + (["--resume"] if resume else [])
    note = f"attempt {attempt}: the one before was lost with its worker or node\n" if attempt > 1 else ""
    child = start_run(command, run_environment(record["threads"]), folder, cwd=cwd, note=note)
    try:
        record = dict(record, command=command, cwd=cwd, started=time.strftime("%Y-%m-%d %H:%M:%S"),
                      resumed=resume, host=socket.gethostname(), pid=child.pid, worker_pid=os.getpid(),
                      attempt=attempt)
        with contextlib.suppress(Exception):
            import ray

            record["node"] = ray.get_runtime_context().get_node_id()
        with atomic_write(paths.record) as handle:
            json.dump(record, handle, indent=1)
        while True:
            try:
                return child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
    except BaseException:
        child.send_signal(signal.SIGTERM)  # main.py saves its finished epochs and writes its stop line
        child.wait()
        raise


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
