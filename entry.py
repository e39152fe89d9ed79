"""How every script ends: bad input, an OS error or a stop is one `error:` line and exit code 2.

    python -c "import entry"   # used by main.py, dataloader.py, refine_llm.py, experiments.py, compare.py

A script's `main()` is `return entry.run_script(body, stop)`: `body()` does the work, and `stop`
(a `Stop`) says, as the work goes on, where a Ctrl-C or SIGTERM would leave the user and what
they can do then. The script updates it at each point where that changes (a training run's
`RunStop` words it for each phase: starting, loading, an epoch, the final test).

    error: <message of an InputError>
    error: interrupted[ <where>]; <then>
    error: <path>: <what the OS said>; <then>          (a full disk, a directory in the way, ...)
    error: standard output was closed (...); <then>    (`python main.py ... | head`)

Stops: `install_stop_handlers()` makes SIGTERM (a scheduler's stop, experiments.py passing a
Ctrl-C on) raise KeyboardInterrupt like Ctrl-C, so both end the same way, also in background jobs
where SIGINT is ignored. After a stop, any error a library raises while it unwinds is reported as
the stop (`stop_requested`). Only the first stop raises: the script is already ending, and a second
one (a repeated Ctrl-C, or a further SIGTERM: Linux sends a sweep's run its parent-death signal again
each time the dying driver's threads pass the run on) would only cut short the saving of the state or
print a traceback from an exit handler. Once stopping, SIGTERM is ignored outright, so that one
arriving while the interpreter shuts down (its handlers gone) does not kill the process either.
"""
import errno
import os
import signal
import sys

from utils import InputError

# What every script needs from requirements.txt (checked, not imported, by check_packages).
REQUIRED_PACKAGES = ("torch", "numpy", "pandas")


def check_packages(names=REQUIRED_PACKAGES) -> None:
    """Exit with code 2 and one line when a required package is not installed for this Python: the
    usual cause is a script run with the system's python instead of the virtual environment's."""
    import importlib.util

    if {"-h", "--help"} & set(sys.argv[1:]):  # the help needs none of them
        return
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        print(f"error: {', '.join(missing)} not installed for {sys.executable}: activate the virtual environment: "
              f"source .venv/bin/activate (made by `python3 -m venv .venv && .venv/bin/pip install -r "
              f"requirements.txt`), or run .venv/bin/python", file=sys.stderr)
        sys.exit(2)


# Set by the stop handler: run_script() then reports any error that follows as the interrupt.
stop_requested = False

# OS errors that the user's environment causes (space, permissions, paths), not the program.
USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR,
                  errno.ENOTDIR, errno.ENOENT, errno.EEXIST, errno.ENAMETOOLONG, errno.EMFILE, errno.EIO,
                  errno.EBUSY, errno.ETXTBSY, errno.ELOOP}


class Stop:
    """What the line for a stop says: `error: interrupted <where>; <then>`.

    `where` is optional ("during epoch 3"); `then` says what can be resumed and how.
    """

    def __init__(self, then: str, where: str = ""):
        self.set(then, where)

    def set(self, then: str, where: str = "") -> None:
        self.then, self.where = then, where

    def line(self) -> str:
        return f"error: interrupted{' ' + self.where if self.where else ''}; {self.then}"


class RunStop(Stop):
    """The stop line of a training run (main.py), set at each phase with `at`: the one place that
    says what is left to resume and the command that does it. An OS error's line ends with `then` too.
    `paths`: the run's files (run_files.RunPaths); `resuming`: the run was started with --resume."""

    def __init__(self, paths, resuming: bool = False):
        self.paths, self.resuming = paths, resuming
        self.at("starting")

    def at(self, phase: str, epoch: int = 0, saved: int | None = None) -> None:
        """phase: starting, loading, epoch (during `epoch`), saved (after `epoch`), trained or test (of
        the best `epoch`). `saved`: the epoch of the training state on disk (default: the last finished
        one, epoch - 1 during an epoch, epoch after it); a stop first writes the state it holds and
        then says so (main.run)."""
        self.set(*self.advice(phase, epoch, saved))

    def advice(self, phase: str, epoch: int, saved: int | None) -> tuple[str, str]:
        """(then, where) of the line at `phase`."""
        state, checkpoint = self.paths.state, self.paths.checkpoint
        nothing = "nothing can be resumed: rerun the command"
        test_it = "rerun the same command with --resume to test it without training"

        def continue_after(last_epoch):
            return f"rerun the same command with --resume to continue after epoch {last_epoch} from {state}"

        if phase in ("starting", "loading") and self.resuming:  # the state is only read before training
            return f"{state} is unchanged: rerun the same command to resume from it", "before training"
        if phase == "starting":
            return f"nothing was written, so {nothing}", "while starting"
        if phase == "loading":
            return f"nothing was trained, so {nothing}", "while loading the data"
        if phase == "epoch":  # before the first epoch finished there is no state
            saved = epoch - 1 if saved is None else saved
            return (continue_after(saved) if saved >= 1 else
                    f"before any epoch finished, so {nothing}" if epoch == 1 else
                    f"no training state was saved, so {nothing}", f"during epoch {epoch}")
        if phase == "saved":
            saved = epoch if saved is None else saved
            return (continue_after(saved) if saved >= 1 else f"no training state was saved, so {nothing}",
                    f"after epoch {epoch}")
        if phase == "trained":
            return f"the best checkpoint {checkpoint} is saved: {test_it}", "after training"
        assert phase == "test", phase
        return (f"training finished and the best checkpoint {checkpoint} (epoch {epoch}) is saved: {test_it}",
                "during the final test")


def _stop_like_ctrl_c(signum, frame):
    global stop_requested
    if stop_requested:  # already stopping: let the first stop finish what it is doing
        return
    stop_requested = True
    # Ignored from now on at the OS level: Python puts back the default action (death by the signal)
    # while the interpreter shuts down, and a further SIGTERM then would end the process by signal 15,
    # not with exit code 2. main.py sets its own handler again, so no run of a sweep inherits this.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def install_stop_handlers() -> None:
    """SIGTERM, and Ctrl-C where it is not ignored (nohup), raise KeyboardInterrupt and mark the stop."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _stop_like_ctrl_c)
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)


def raise_if_stopped() -> None:
    """Raise the KeyboardInterrupt of a stop that a finalizer swallowed (Python only prints
    "Exception ignored" there): long loops call this between steps so the stop still takes effect."""
    if stop_requested:
        raise KeyboardInterrupt


def os_error_line(exc: OSError, then: str) -> str:
    """`error: <path>: <reason>; <then>`, with the fix for the common causes."""
    where = exc.filename if exc.filename is not None else "a file being written"
    reason = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "free space", errno.EDQUOT: "free space",
            errno.EACCES: "check its permissions", errno.EPERM: "check its permissions",
            errno.EROFS: "write somewhere writable"}.get(exc.errno)
    return f"error: {where}: {reason}{f' ({hint})' if hint else ''}; {then}"


def _end_with_closed_output(stop: Stop) -> None:
    """The reader of stdout went away (`| head` read enough): say so on stderr, where the one line
    still reaches the user, and send what Python still wants to flush at exit to /dev/null, where
    it would otherwise raise once more and print a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    try:
        print(f"error: standard output was closed before the end (a broken pipe, e.g. `| head`); {stop.then}",
              file=sys.stderr)
    except OSError:  # stderr is the closed pipe too: the exit code alone tells
        pass


STDOUT = "standard output"


class _NamedStdout:
    """sys.stdout while a script runs: its write errors name it (`> /dev/full`: no space left), where an
    OSError of a plain write names no file at all."""

    def __init__(self, stream):
        self._stream = stream

    def _named(self, call, *args):
        try:
            return call(*args)
        except OSError as exc:
            if exc.filename is None:
                exc.filename = STDOUT
            raise

    def write(self, text):
        return self._named(self._stream.write, text)

    def flush(self):
        return self._named(self._stream.flush)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _silence_stdout() -> None:
    """Send what is still buffered for a failed stdout to /dev/null: flushed at exit into the failed
    file, it would print a traceback after the error line."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run_script(body, stop: Stop) -> int:
    """Run `body()` and turn how it ends into an exit code: its return value (None is 0), or 2 with
    one line on stderr for bad input, a stop, or an OS error the user's environment caused."""
    stdout = sys.stdout
    if stdout is not None:  # None: stdout closed (`>&-`), which main.py runs without (its log file alone)
        sys.stdout = _NamedStdout(stdout)
    try:
        code = body() or 0
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a failed write is one line, not in Python's flush at exit
        if not stop_requested:
            return code
        print(stop.line(), file=sys.stderr)  # a stop swallowed after the last check is a stop all the same
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OSError as exc:
        if stop_requested:
            print(stop.line(), file=sys.stderr)
        elif exc.errno == errno.EPIPE:
            _end_with_closed_output(stop)
        elif exc.errno in USER_OS_ERRORS:
            if exc.filename == STDOUT:
                _silence_stdout()
            print(os_error_line(exc, stop.then), file=sys.stderr)
        else:
            raise
    except (KeyboardInterrupt, Exception) as exc:
        # After a stop, a library's own error while unwinding is the stop too; without one it is a bug.
        if not isinstance(exc, KeyboardInterrupt) and not stop_requested:
            raise
        print(stop.line(), file=sys.stderr)
    finally:
        sys.stdout = stdout
    return 2
