"""Test configuration: where the published data and logs are (pytest.ini puts the repository root on the path).

    python -m pytest -q

Tests that need the published ML-100K splits find them in $REFINE_DATA_DIR or in the repository's
dataset/ (what `python dataloader.py download ML-100K --refined` makes), the first that holds
them, and skip otherwise; the authors' logs (ReFINe_<NAME>.out) are looked for in $REFINE_LOG_DIR
and in results4comparison/published/ (where `compare.py published:NAME` keeps them). No test
looks anywhere else. The run's closing summary lists every skip reason with its count and what
would make those tests run. The published code's own CPU logs, the oracle of the digit-for-digit
tests, are part of the repository. All other tests build their own small synthetic data.
"""
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ORACLE_DIR = ROOT / "results4comparison" / "published-code-on-cpu"
PUBLISHED_DIR = ROOT / "results4comparison" / "published"
ML100K_SPLITS = tuple(f"ML-100K_{split}.csv" for split in ("train_augment", "train_original", "validation", "test"))
ML100K_RAW = ("ml-100k.inter", "ml-100k.item")
# Every skip for missing published data carries this text, so that the summary can group them.
MISSING_DATA = "published data not found"
GET_DATA = "python dataloader.py download ML-100K --refined"


def ctrl_c_enabled():
    """preexec_fn for a subprocess that a test interrupts with SIGINT: a suite run as a background job
    has SIGINT ignored, and children inherit that; the real command then sees Ctrl-C as a terminal sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def data_dirs():
    """Candidate data folders (each holds <NAME>/ subfolders), in the order they are searched."""
    dirs = [Path(os.environ["REFINE_DATA_DIR"])] if os.environ.get("REFINE_DATA_DIR") else []
    return dirs + [ROOT / "dataset"]


def log_dirs():
    """Candidate folders of the authors' logs, in the order they are searched."""
    dirs = [Path(os.environ["REFINE_LOG_DIR"])] if os.environ.get("REFINE_LOG_DIR") else []
    return dirs + [PUBLISHED_DIR]


def find_data_dir(name, files, how=GET_DATA):
    """The first candidate data folder whose <name>/ holds every file named; skips the test if none does
    (`how`: the command that provides the files)."""
    for folder in data_dirs():
        if all((folder / name / file).is_file() for file in files):
            return folder
    pytest.skip(f"{MISSING_DATA}: {name}/ with {', '.join(files)} in none of "
                f"{', '.join(str(d) for d in data_dirs())}; run: {how}")


@pytest.fixture
def ml100k_splits():
    """A data folder whose ML-100K/ holds the four published split CSVs (pass it as --data_dir)."""
    return find_data_dir("ML-100K", ML100K_SPLITS)


@pytest.fixture
def ml100k_with_raw():
    """A data folder whose ML-100K/ holds the four split CSVs and the raw RecBole files, as
    `download ML-100K --refined` leaves it."""
    return find_data_dir("ML-100K", ML100K_SPLITS + ML100K_RAW)


def find_published_log(name):
    """Path of the authors' log `name` (e.g. ReFINe_ML-100K.out), or None."""
    for folder in log_dirs():
        if (folder / name).is_file():
            return folder / name
    return None


def fetch_log_command(name):
    """The command that puts the authors' log `name` into results4comparison/published/."""
    match = re.fullmatch(r"ReFINe_(.+)\.out", name)
    return f"python compare.py published:{match.group(1)}" if match else f"python compare.py published-plus:{name[:-4]}"


@pytest.fixture
def published_log():
    """published_log(name) -> the path of the authors' log `name`; skips the test where it is absent."""
    def find(name):
        path = find_published_log(name)
        if path is None:
            pytest.skip(f"{MISSING_DATA}: {name} in none of {', '.join(str(d) for d in log_dirs())}; "
                        f"run: {fetch_log_command(name)}")
        return path
    return find


# What makes a skipped test run, by a phrase of its skip reason (the first that matches wins).
SKIP_ADVICE = (
    ("CUDA GPU is present", "runs where no CUDA GPU is visible"),
    ("CUDA", "needs a CUDA GPU"),
    ("root", "running as root: file permissions cannot be tested; run the tests as another user"),
    ("/dev/full", "needs /dev/full (Linux)"),
    ("/proc", "needs /proc (Linux)"),
    ("could not import 'ray'", "pip install -r requirements-ray.txt"),
)


def skip_reason(report):
    """The reason text of a skipped test's report."""
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


def skip_summary(reasons):
    """Lines grouping skip reasons (count, reason, what would make them run), most frequent first."""
    groups = Counter()
    for reason in reasons:
        if MISSING_DATA in reason and "; run: " in reason:
            # Missing-data reasons differ in the files named: grouped by the command that provides them.
            command = reason.rpartition("; run: ")[2]
            where = "$REFINE_LOG_DIR" if "compare.py" in command else "$REFINE_DATA_DIR"
            key = (MISSING_DATA, f"{command} (or set {where})")
        else:
            key = (reason, next((text for phrase, text in SKIP_ADVICE if phrase in reason), None))
        groups[key] += 1
    lines = []
    for (reason, advice), count in groups.most_common():
        lines.append(f"{count} skipped: {reason}" + (f" -> {advice}" if advice else ""))
    return lines


def pytest_terminal_summary(terminalreporter):
    """Every skip reason with its count and what would make those tests run."""
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        terminalreporter.write_sep("-", f"{len(skipped)} skipped tests, by reason")
        for line in skip_summary(skip_reason(report) for report in skipped):
            terminalreporter.write_line(line)


class LocalHTTPServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) serving `handler`; use it with `with`.

    Subclasses build their handler class in __init__ and call super().__init__(handler, path).
    """

    def __init__(self, handler, path="/"):
        import threading
        from http.server import ThreadingHTTPServer

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                # A client that stops (a failed run cancelling its other requests) closes sockets the
                # server still writes to; socketserver would print that traceback into the test's stderr.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.httpd = Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
