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
import contextlib
import io
import shutil
from collections import Counter

import pytest

from helpers import (MISSING_DATA, ML100K_RAW, ML100K_SPLITS, SMALL, fetch_log_command, find_data_dir,
                     find_published_log, log_dirs, write_synthetic_dataset)


@pytest.fixture
def ml100k_splits():
    """A data folder whose ML-100K/ holds the four published split CSVs (pass it as --data_dir)."""
    return find_data_dir("ML-100K", ML100K_SPLITS)


@pytest.fixture
def ml100k_with_raw():
    """A data folder whose ML-100K/ holds the four split CSVs and the raw RecBole files, as
    `download ML-100K --refined` leaves it."""
    return find_data_dir("ML-100K", ML100K_SPLITS + ML100K_RAW)


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


# --- main.py on synthetic data (tests/test_main*.py) ---------------------------------------------------

@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A synthetic dataset under tmp_path/data; the working directory (for result/) is tmp_path."""
    write_synthetic_dataset(tmp_path / "data", "TOY")
    monkeypatch.chdir(tmp_path)
    return ["--data_dir", str(tmp_path / "data"), "--device", "cpu"] + SMALL


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-epoch run in its own folder: data/TOY, result/TOY/run.* (a valid .last.pt included)."""
    import main  # here: importing conftest.py loads no torch

    folder = tmp_path_factory.mktemp("finished")
    write_synthetic_dataset(folder / "data", "TOY")
    argv = ["--data_dir", str(folder / "data"), "--device", "cpu"] + SMALL + ["--epochs", "2", "--path_name", "run"]
    with contextlib.chdir(folder), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        assert main.main(argv) == 0
    return folder, argv


@pytest.fixture
def copy_of_finished_run(finished_run, tmp_path, monkeypatch):
    folder, argv = finished_run
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    data_dir_at = argv.index("--data_dir") + 1
    return argv[:data_dir_at] + [str(tmp_path / "data")] + argv[data_dir_at + 1:]



def pytest_collection_modifyitems(config, items):
    """Every test marked cuda is skipped where torch sees no CUDA GPU (`pytest -m cuda` selects them all)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch  # only when a CUDA test is collected

    if not torch.cuda.is_available():
        for item in marked:
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU visible to torch"))


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


