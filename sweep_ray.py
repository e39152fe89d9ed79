"""The Ray executor of experiments.py (`--executor ray`): one Ray task per run, which does what the
local pool of sweep.py does: each run's record written where it starts, a stop passed to each run
through its own stop path, a run lost with its worker or node started again (it resumes).

    python experiments.py --dataset ML-100K --seeds 5 --executor ray --out results/ML-100K

Ray is imported inside the functions: the rest of the sweep, the report and --help need no Ray.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from run_files import RunPaths
from run_process import MAIN, ROOT, Run, last_line, run_environment, run_threads, start_run
from utils import InputError, atomic_write

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
