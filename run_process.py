"""One run of a sweep as a child process of main.py: its command line (Run), its environment and torch
threads, its start (a session of its own, ended when the driver ends) and why it failed. The local
pool (sweep.py) and the Ray executor (sweep_ray.py) both start their runs through it.

    python experiments.py --dataset ML-100K --seeds 5 --jobs 2 --out results/ML-100K   # the command
"""
import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from run_files import SWEEP_PATH_NAME, RunPaths

ROOT = Path(__file__).resolve().parent
MAIN = ROOT / "main.py"


@dataclass
class Run:
    """One (config, seed) of a sweep, run in its own folder."""
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

