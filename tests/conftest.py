"""Test configuration: the repository root on sys.path, and where the published data and logs are.

    python -m pytest -q

Tests that need the published ML-100K splits find them in the first of ../shared/datasets (or
$REFINE_SHARED_DIR/datasets), $REFINE_DATA_DIR and the repository's dataset/ (what
`python dataloader.py download ML-100K --refined` makes) that holds them, and skip otherwise; the
authors' logs (ReFINe_<NAME>.out) are looked for in ../shared/reference-logs and in
results4comparison/published/ (where `compare.py published:NAME` keeps them). The run's summary
says in one line how many tests skipped for want of them and which command makes them run. The
published code's own CPU logs, the oracle of the digit-for-digit tests, are part of the repository.
All other tests build their own small synthetic data.
"""
import os
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from toy import write_synthetic_dataset  # noqa: E402,F401  (the tests import it from here)

SHARED_DIR = Path(os.environ.get("REFINE_SHARED_DIR", ROOT.parent / "shared"))
ORACLE_DIR = ROOT / "results4comparison" / "published-code-on-cpu"
ML100K_SPLITS = tuple(f"ML-100K_{split}.csv" for split in ("train_augment", "train_original", "validation", "test"))
ML100K_RAW = ("ml-100k.inter", "ml-100k.item")
# Every skip for missing published data carries this text, so that the summary can count them.
MISSING_DATA = "published data not found"
GET_DATA = "python dataloader.py download ML-100K --refined"


def ctrl_c_enabled():
    """preexec_fn for a subprocess that a test interrupts with SIGINT: a suite run as a background job
    has SIGINT ignored, and children inherit that; the real command then sees Ctrl-C as a terminal sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def data_dirs():
    """Candidate data folders (each holds <NAME>/ subfolders), in the order they are searched."""
    dirs = [SHARED_DIR / "datasets"]
    if os.environ.get("REFINE_DATA_DIR"):
        dirs.append(Path(os.environ["REFINE_DATA_DIR"]))
    return dirs + [ROOT / "dataset"]


def find_data_dir(name, files):
    """The first candidate data folder whose <name>/ holds every file named; skips the test if none does."""
    for folder in data_dirs():
        if all((folder / name / file).is_file() for file in files):
            return folder
    pytest.skip(f"{MISSING_DATA}: {name}/ with {', '.join(files)} in none of "
                f"{', '.join(str(d) for d in data_dirs())}")


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
    for path in (SHARED_DIR / "reference-logs" / name, ROOT / "results4comparison" / "published" / name):
        if path.is_file():
            return path
    return None


@pytest.fixture
def published_log():
    """published_log(name) -> the path of the authors' log `name`; skips the test where it is absent."""
    def find(name):
        path = find_published_log(name)
        if path is None:
            pytest.skip(f"{MISSING_DATA}: {name} in neither {SHARED_DIR / 'reference-logs'} nor "
                        f"{ROOT / 'results4comparison' / 'published'}")
        return path
    return find


@pytest.fixture
def shared_dir():
    """Path of ../shared, for the few tests that need files only it holds (the GroupLens originals);
    skips the test when it is not there."""
    if not (SHARED_DIR / "datasets").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DIR}")
    return SHARED_DIR


def pytest_terminal_summary(terminalreporter):
    """One line on the tests that skipped for want of published data, and the command that fixes it."""
    missing = [report for report in terminalreporter.stats.get("skipped", [])
               if MISSING_DATA in str(report.longrepr)]
    if missing:
        terminalreporter.write_line(
            f"{len(missing)} tests skipped: the published ML-100K splits or logs were not found; "
            f"`{GET_DATA}` (into dataset/, or $REFINE_DATA_DIR) makes them run")


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
