"""Shared helpers: user-facing errors and command lines, atomic writes, file hashes, the run log, early stopping.

    python -c "import utils"   # imported by main.py, dataloader.py, refine_llm.py
"""
import argparse
import contextlib
import hashlib
import io
import os
import tempfile
from pathlib import Path


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (unless the text already names it, or there is
    none); descriptions and epilogs (the examples) keep their line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default is None \
                or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0:  # store_true / store_false
            return f"{text} (default: {'on' if action.default else 'off'})"
        return text + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one `error:` line (the house rule for bad input), exit code 2, and
    no abbreviated long flags: `--data_d` taken for `--data_dir` would slip past every check that
    looks for a flag by its name (experiments.py's guards on the flags after `--`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class InputError(Exception):
    """Bad user input (missing file, malformed CSV, bad flag value).

    Entry points print it as one line, `error: <message>`, and exit with code 2.
    """


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds.

    A crash or Ctrl-C inside the block leaves no half-written file under the final name. An OS
    error of the temporary file (no permission, a full disk, a folder in the way of the rename)
    names `path`, the file the user knows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        # mkstemp creates 0600; give the final file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        with open(tmp_name, mode, **open_kwargs) as handle:
            yield handle
        os.replace(tmp_name, path)
    except BaseException as exc:
        if tmp_name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        # A failed write names no file, mkstemp and the rename name the temporary one.
        if isinstance(exc, OSError) and (exc.filename is None or
                                         os.path.basename(str(exc.filename)).startswith(f".{path.name}.")):
            exc.filename, exc.filename2 = str(path), None
        raise


class RunLog(io.TextIOBase):
    """A text stream that writes through to `stream` (stdout) and keeps its file `path` up to date.

    main.py prints through it (contextlib.redirect_stdout), so the log file holds exactly what
    stdout showed. `save()` writes what is new since the last save: the first one writes everything
    so far to a temporary file renamed over `path` (a previous log there stays whole until then) and
    keeps the file open; each later one appends the new text and flushes it, so an epoch's save costs
    its own lines, not the whole log. `close()` closes the file.

    `stream` is None when stdout is closed (`python main.py ... >&-`): the log file alone is written.
    The file is UTF-8 with `surrogateescape`: text that came from bytes that are not UTF-8 (a path
    with byte 0xff, which Python decodes to a surrogate) is written as those bytes. A stdout whose
    encoding cannot hold such text gets it backslash-escaped instead of failing.
    """

    ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}

    def __init__(self, stream, path):
        self.stream, self.path, self.parts, self.saved, self.handle = stream, Path(path), [], 0, None

    def write(self, text: str) -> int:
        if self.stream is not None:
            try:
                self.stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(self.stream, "encoding", None) or "utf-8"
                self.stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()

    def getvalue(self) -> str:
        return "".join(self.parts)

    def save(self) -> None:
        new, count = "".join(self.parts[self.saved:]), len(self.parts)
        if self.handle is None:
            with atomic_write(self.path, **self.ENCODING) as handle:
                handle.write(new)
            self.handle = open(self.path, "a", **self.ENCODING)
        else:
            try:
                self.handle.write(new)
                self.handle.flush()
            except OSError as exc:  # name the file, as atomic_write does
                if exc.filename is None:
                    exc.filename = str(self.path)
                raise
        self.saved = count

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        super().close()


def regular_file(path, missing: str, fix: str = "give the file itself") -> Path:
    """`path` as a Path if it is a regular file; else an InputError: `missing` where nothing is there,
    or one naming what stands there instead (a folder, a device or pipe) and `fix`. Checked before
    the work starts. A file that cannot be read fails when it is opened, as an OSError naming it
    (entry.run_script makes that one line)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a file: {fix}")
    if path.exists():
        raise InputError(f"{path} is a special file (a device, pipe or socket), not a regular file: {fix}")
    raise InputError(missing)


def sha256_of(path) -> str:
    """The file's sha256 as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_path(path, what="output"):
    """InputError unless a file can be written at `path`: not a directory, no file in the way of
    a parent folder, the nearest existing folder writable. Checked before any work starts."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory; move it away or write elsewhere")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{what} {path}: {parent} is a file, not a folder; move it away or write elsewhere")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"{what} {path}: no permission to write in {parent}")
            return


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA), as torch_geometric.seed_everything does."""
    import torch_geometric

    torch_geometric.seed_everything(seed)


class EarlyStopping:
    """Early stopping on a score that should rise (validation recall@20 in ReFINe).

    The first score sets the best. A lower score adds one to the counter; an equal or higher
    one becomes the new best and resets the counter (ties count as improvements, as published).
    `early_stop` turns True once the counter reaches `patience`.
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.counter = 0
        self.best_score = None
        self.best_epoch = None
        self.best_metrics = None
        self.early_stop = False

    def update(self, epoch: int, score: float, metrics) -> bool:
        """Record one evaluation; True when it is the new best (the caller saves a checkpoint)."""
        if self.best_score is not None and score < self.best_score:
            self.counter += 1
            self.early_stop = self.counter >= self.patience
            return False
        self.best_score, self.best_epoch, self.best_metrics = score, epoch, metrics
        self.counter = 0
        return True

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def format_metrics(ks, results) -> str:
    """The published four-line metrics block: width 7 for k < 10 so the columns line up."""
    lines = []
    for k, (precision, recall, ndcg) in zip(ks, results):
        width = 7 if k < 10 else 0
        lines.append(f"Precision@{k}: {precision:{width}.4f}, Recall@{k}: {recall:{width}.4f}, "
                     f"NDCG@{k}: {ndcg:{width}.4f}")
    return "\n".join(lines)


METRICS = ("precision", "recall", "ndcg")  # their names in a run's JSON and CSV files, in this order


def metrics_by_k(ks, results) -> dict:
    """{"k": {"precision": .., "recall": .., "ndcg": ..}}: the metrics block as JSON for tools."""
    return {str(k): dict(zip(METRICS, values)) for k, values in zip(ks, results)}
