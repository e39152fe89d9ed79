"""Shared helpers: user-facing errors and atomic file writes.

    python -c "import utils"   # imported by main.py, dataloader.py, refine_llm.py
"""
import contextlib
import os
import tempfile
from pathlib import Path


class InputError(Exception):
    """Bad user input (missing file, malformed CSV, bad flag value).

    Entry points print it as one line, `error: <message>`, and exit with code 2.
    """


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds.

    A crash or Ctrl-C inside the block leaves no half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp_name, mode, **open_kwargs) as handle:
            yield handle
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
