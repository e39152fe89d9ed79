"""main.py's files on disk: the best model, the training state for --resume (random generators and
data fingerprint included), the checks a resumed run must pass, and the lock that keeps one writer per run.

    python -c "import checkpoint"   # used by main.py; see docs/training.md, 'Resuming'

Everything is saved with CPU tensors, so a run trained on a GPU can be tested or resumed on a
machine without one; files are read onto the CPU with `torch.load(weights_only=True)`, so a file from
elsewhere cannot run code, and each piece is then moved as it needs (restore).
A damaged file is an InputError (one line naming the file and what to do).
"""
import contextlib
import errno
import fcntl
import io
import math
import os
import random
import stat
import time
from pathlib import Path

import numpy as np
import torch

from cli import lock_held_message, split_files
from utils import InputError, atomic_write, sha256_of

STATE_KIND = "main.py training state v2"  # v1 (no kind, numpy arrays inside) predates the data fingerprint

# The flags that MAY differ on --resume; every other flag must match (so a new flag is checked by
# default). None of these changes what an epoch computes:
# - epochs: how far to train; device, gpu_id, threads: where (same distribution; digits may differ
#   in the last places, docs/training.md); deterministic: which GPU kernels (the same distribution;
#   nothing changes on a CPU); data_dir: the data fingerprint checks the bytes instead;
# - result_dir, path_name: where the files are; test_batch_size: how many users are scored at
#   once (ranking is per user); resume: the flag itself;
# - eval_protocol: it changes only the final test's masking, which a finished run may redo.
# - save_every_s: how often the state is written, not what it holds.
MAY_CHANGE = frozenset({"epochs", "device", "gpu_id", "threads", "deterministic", "data_dir", "result_dir",
                        "path_name", "test_batch_size", "resume", "eval_protocol", "save_every_s"})


# --- saving -------------------------------------------------------------------------------------------

def to_cpu(obj):
    """`obj` with every tensor inside (dicts, lists, tuples) copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {key: to_cpu(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(value) for value in obj)
    return obj


def snapshot(obj):
    """A copy of `obj` that later training cannot change: every tensor copied to the CPU, every dict,
    list and tuple new (the state of a finished epoch, kept until it is written)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: snapshot(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(value) for value in obj)
    return obj


class StateWriter:
    """main.py's training state on disk, written at most every `every` seconds: `keep()` takes the state
    of each finished epoch (a snapshot) and writes it when `now` (a new best checkpoint, the last epoch)
    or when `every` seconds have passed since the last write; otherwise it is held until the next one,
    or `write_held()` (a stop or an error) writes it. `saved_epoch` is the epoch of the state on disk (0:
    none). A write that fails with an OS error (a full disk) is not tried again: the previous state stays
    whole on disk. A write cut by a stop keeps the state held, so the stop's own write_held() writes it."""

    def __init__(self, path: Path, every: float, saved_epoch: int):
        self.path, self.every, self.saved_epoch = path, every, saved_epoch
        self.held, self.last_write = None, time.monotonic()

    def keep(self, epoch: int, state: dict, now: bool) -> None:
        self.held = (epoch, state)
        if now or time.monotonic() - self.last_write >= self.every:
            self.write_held()

    def write_held(self) -> bool:
        """Write the held state, if any; whether one was written."""
        if self.held is None:
            return False
        epoch, state = self.held
        try:
            save(state, self.path)
        except OSError:
            self.held = None
            raise
        self.held, self.saved_epoch, self.last_write = None, epoch, time.monotonic()
        return True


def save(obj, path: Path) -> None:
    """torch.save of `obj` with CPU tensors, atomically (a crash or full disk leaves the old file).

    Serialized in memory first: torch's writer reports a failed write (a full disk) as a RuntimeError
    of its own, a plain write raises the OSError that names the cause and the file."""
    buffer = io.BytesIO()
    torch.save(to_cpu(obj), buffer)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def rng_state(device: torch.device) -> dict:
    """Every generator's state in types torch.load(weights_only=True) reads (numpy's array as a list);
    the CUDA one of the run's own device only (a resume restores it onto its current device)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (name, keys.tolist(), position, has_gauss, cached_gaussian),
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def training_state(model, optimizer, epoch, early_stopping, history, elapsed, args, data_sha256, device) -> dict:
    return {"kind": STATE_KIND, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "early_stopping": early_stopping.state_dict(), "history": history, "elapsed": elapsed,
            "rng": rng_state(device), "args": vars(args), "data_sha256": data_sha256}


def data_fingerprint(args) -> dict:
    """{file name: sha256} of the three split files: a resumed run must train on the same bytes."""
    return {path.name: sha256_of(path) for path in split_files(args)}


# --- loading --------------------------------------------------------------------------------------------

def set_rng_state(state: dict, device: torch.device, path: Path) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(_as_tuples(state["python"]))
    cuda = state.get("cuda")
    if device.type != "cuda" or cuda is None:
        return  # a CPU run draws nothing from CUDA generators; a state from a CPU run has none
    if isinstance(cuda, list):
        # Older states hold every visible GPU's state, restored by index: this device's index, if saved.
        if device.index >= len(cuda):
            raise InputError(f"--resume: {path} holds the CUDA random states of {len(cuda)} GPU(s) (an older "
                             f"format, by GPU number) and none for {device}: resume with --device cuda:0, or "
                             f"on the CPU with --device cpu")
        cuda = cuda[device.index]
    torch.cuda.set_rng_state(cuda.cpu(), device)


def _as_tuples(obj):
    """random.setstate needs tuples where torch.load may give lists."""
    return tuple(_as_tuples(value) for value in obj) if isinstance(obj, (list, tuple)) else obj


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _is_byte_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8


def _tensor_dict(value) -> bool:
    return isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())


def _numpy_state(value) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 5 and isinstance(value[0], str)
            and isinstance(value[1], list) and all(_is_int(key) for key in value[1]) and _is_int(value[2]))


def _python_state(value) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[1], (list, tuple))
            and all(_is_int(word) for word in value[1]))


def _cuda_state(value) -> bool:
    return value is None or _is_byte_tensor(value) or (
        isinstance(value, list) and all(_is_byte_tensor(item) for item in value))


# The schema of a training state: key -> (what it must be, in words; the check).
STATE_SCHEMA = {
    "model": ("a dict of tensors", _tensor_dict),
    "optimizer": ("an optimizer state (a dict with state and param_groups)",
                  lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                  and isinstance(v.get("param_groups"), list)),
    "epoch": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "early_stopping": ("an early-stopping state (a dict)",
                       lambda v: isinstance(v, dict) and {"patience", "counter", "best_score", "best_epoch",
                                                          "best_metrics", "early_stop"} <= set(v)
                       and _is_int(v["counter"]) and (v["best_epoch"] is None or _is_int(v["best_epoch"]))),
    "history": ("a list of epoch records",
                lambda v: isinstance(v, list) and all(isinstance(r, dict) and isinstance(r.get("log"), str)
                                                      for r in v)),
    "elapsed": ("a finite number of seconds", lambda v: _is_number(v) and v >= 0),
    "rng": ("the random generators' states (torch, numpy, python, cuda)",
            lambda v: isinstance(v, dict) and _is_byte_tensor(v.get("torch")) and _numpy_state(v.get("numpy"))
            and _python_state(v.get("python")) and _cuda_state(v.get("cuda"))),
    "args": ("a dict of flags", lambda v: isinstance(v, dict) and all(isinstance(key, str) for key in v)),
    "data_sha256": ("a dict of file names to sha256",
                    lambda v: isinstance(v, dict) and all(isinstance(x, str) for item in v.items() for x in item)),
}


def _start_over(path: Path) -> str:
    return f"rerun without --resume to start over (or delete {path})"


def _read(path: Path, what: str, then: str, prefix: str = ""):
    """The file's objects, every tensor on the CPU (restore moves each piece where it belongs)."""
    with open(path, "rb") as handle:  # the OS's own errors (permission, ...) are reported as such
        try:
            return torch.load(handle, weights_only=True, map_location="cpu")
        except Exception:  # torch.load reports damaged files by many exception types, OSError included
            raise InputError(f"{prefix}{path} cannot be read as {what} (damaged, truncated, or not written by "
                             f"main.py): {then}") from None


def load_resume_state(path: Path, args, best_path: Path) -> dict:
    """The training state saved at `path`, checked to be whole, of this command and of this data, with
    a readable best checkpoint at `best_path` once it names a best epoch; or an InputError. Its tensors
    are on the CPU: restore() moves them (a state saved on a GPU resumes on a CPU, and back)."""
    if not path.is_file():
        raise InputError(f"--resume: no saved training state at {path}: rerun without --resume")
    state = _read(path, "a training state", _start_over(path), "--resume: ")
    if not isinstance(state, dict) or state.get("kind") != STATE_KIND or not all(key in state for key in STATE_SCHEMA):
        found = ("a model checkpoint (a bare state_dict), not a training state" if _tensor_dict(state) and state
                 else "not a training state of this version of main.py")
        raise InputError(f"--resume: {path} is {found}: {_start_over(path)}")
    for key, (expected, check) in STATE_SCHEMA.items():
        if not check(state[key]):
            raise InputError(f"--resume: {path} is damaged: its {key!r} is not {expected}: {_start_over(path)}")
    saved, now = state["args"], vars(args)
    changed = sorted(flag for flag in set(saved) | set(now)
                     if flag not in MAY_CHANGE and saved.get(flag) != now.get(flag))
    if changed:
        raise InputError(f"--resume: {path} was saved with other values of --{', --'.join(changed)}: rerun with "
                         f"the same values, or {_start_over(path)}")
    fingerprint = data_fingerprint(args)
    changed = sorted(name for name in set(fingerprint) | set(state["data_sha256"])
                     if fingerprint.get(name) != state["data_sha256"].get(name))
    if changed:
        raise InputError(f"--resume: {', '.join(changed)} changed since {path} was saved: restore the data to "
                         f"resume, or {_start_over(path)}")
    if state["early_stopping"]["best_epoch"] is not None:  # a damaged one found now, not after training
        read_best(best_path, None)
    return state


def restore(state: dict, model, optimizer, early_stopping, path: Path, device: torch.device) -> None:
    """Put a checked state into the run's model, optimizer, early stopping and generators."""
    restore_model_and_optimizer(state, model, optimizer, path)
    early_stopping.load_state_dict(state["early_stopping"])
    set_rng_state(state["rng"], device, path)


def restore_model_and_optimizer(state: dict, model, optimizer, path: Path) -> None:
    """The CPU tensors of a state, each moved where the run keeps it: the model's weights are copied into
    its parameters (on the run's device); the optimizer's state goes to its parameter's device, except
    Adam's `step` counters, which stay on the CPU as torch keeps them (Optimizer.load_state_dict's
    policy, unless `capturable` or `fused`). A counter mapped onto a GPU would make every optimizer step
    read it back from the device, a host sync per batch (bench/host_syncs.py --resumed counts them)."""
    check_fits(model, state["model"], path, _start_over(path), "--resume: ")
    model.load_state_dict(state["model"])
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, RuntimeError):
        raise InputError(f"--resume: {path} holds an optimizer state of other parameters: "
                         f"{_start_over(path)}") from None


def check_fits(model, weights: dict, path: Path, then: str, prefix: str = "") -> None:
    """An InputError unless the saved parameters have the model's names and shapes."""
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    if {name: tuple(value.shape) for name, value in weights.items()} != expected:
        raise InputError(f"{prefix}{path} holds a model of other parameters or shapes: {then}")


def read_best(path: Path, model) -> dict:
    """The weights of the best checkpoint `<path_name>.pt`, on the CPU (load_state_dict copies them to
    the model's device), checked to fit `model` (unless None); a missing or damaged file is an InputError."""
    then = "rerun without --resume to train the run again"
    if not path.is_file():
        raise InputError(f"the best checkpoint {path} is missing: {then}")
    weights = _read(path, "a model checkpoint", then)
    if not _tensor_dict(weights):
        raise InputError(f"{path} is not a model checkpoint (a dict of tensors): {then}")
    if model is not None:
        check_fits(model, weights, path, then)
    return weights


# --- one writer per run --------------------------------------------------------------------------------

def _open_lock_file(path: Path) -> int:
    """The lock file, opened or made without following a link: a link planted there would make the run
    truncate and overwrite the file it points to. Anything but a regular file is refused, untouched
    (O_NONBLOCK: a pipe there must not hang the open)."""
    refused = (f"{path} (the run's lock file) is a link or not a regular file; refused to write through it: "
               f"remove it and rerun, or give this run another --path_name")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise InputError(refused) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(refused)
    return fd


LOCK_ATTEMPTS = 10  # 0.45 s in all before a held lock is refused


@contextlib.contextmanager
def run_lock(path: Path):
    """Hold an OS lock on `path` (with our pid inside) for the block, or an InputError naming the holder.

    The kernel releases a flock when its holder dies, so a crashed run leaves no stale lock. The file
    is removed at the end; a process that locked the file just before that checks, after locking,
    that the name still leads to its file, and locks anew if not.
    """
    while True:
        fd = _open_lock_file(path)
        for attempt in range(LOCK_ATTEMPTS):  # a moment's retry: another main.py's probe (cli.check_run_lock)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    os.close(fd)
                    raise
                if attempt == LOCK_ATTEMPTS - 1:
                    holder = os.read(fd, 32).decode(errors="replace").strip()
                    os.close(fd)
                    raise InputError(lock_held_message(path, holder)) from None
                time.sleep(0.05)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # removed by the holder that ended meanwhile: lock the new file
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
