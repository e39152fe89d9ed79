"""Test configuration: the repository root on sys.path and the location of ../shared.

The published splits and logs live in ../shared (or $REFINE_SHARED_DIR); tests that need them
skip cleanly when it is absent. All other tests build their own small synthetic data.
"""
import os
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED_DIR = Path(os.environ.get("REFINE_SHARED_DIR", ROOT.parent / "shared"))


def ctrl_c_enabled():
    """preexec_fn for a subprocess that a test interrupts with SIGINT: a suite run as a background job
    has SIGINT ignored, and children inherit that; the real command then sees Ctrl-C as a terminal sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def shared_dir():
    """Path of ../shared; skips the test when it is not there."""
    if not (SHARED_DIR / "datasets").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DIR}")
    return SHARED_DIR


def write_synthetic_dataset(data_dir, name="TOY", num_users=40, num_items=60, seed=0):
    """Split CSVs in the published format: every user and item has train positives.

    Ratings in train: 4/5 positives, 2/3 neutrals, 0.5/1 confirmed negatives; validation and
    test hold positives only. Returns the folder written.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    header = "user_id:token,item_id:token,rating:float\n"
    rows = {"train": [], "validation": [], "test": []}
    for user in range(1, num_users + 1):
        items = rng.permutation(np.arange(1, num_items + 1))[:20]
        # Item ids user..user+3 (mod) guarantee every item has a train positive.
        guaranteed = [(user + offset - 1) % num_items + 1 for offset in range(3)]
        items = [i for i in items if i not in guaranteed]
        for item in guaranteed + items[:6]:
            rows["train"].append((user, item, rng.choice([4, 5])))
        for item in items[6:10]:
            rows["train"].append((user, item, rng.choice([2, 3])))
        for item in items[10:13]:
            rows["train"].append((user, item, rng.choice([0.5, 1])))
        rows["validation"] += [(user, item, 4) for item in items[13:15]]
        rows["test"] += [(user, item, 5) for item in items[15:18]]
    positive_items = {item for _, item, rating in rows["train"] if rating >= 4}
    for split in ("validation", "test"):
        rows[split] = [row for row in rows[split] if row[1] in positive_items]
    folder = Path(data_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, filename in (("train", f"{name}_train_augment.csv"), ("validation", f"{name}_validation.csv"),
                            ("test", f"{name}_test.csv")):
        lines = "".join(f"{u},{i},{r}\n" for u, i, r in rows[split])
        (folder / filename).write_text(header + lines)
    return folder


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
