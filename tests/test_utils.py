"""Early stopping (ties count as improvements), the metrics block format and atomic writes."""
import os

import pytest

from utils import EarlyStopping, InputError, atomic_write, format_metrics, regular_file


def test_early_stopping_ties_and_patience():
    stopper = EarlyStopping(patience=2)
    assert stopper.update(1, 0.20, "m1") is True          # first epoch sets the best
    assert stopper.update(2, 0.19, "m2") is False and stopper.counter == 1
    assert stopper.update(3, 0.20, "m3") is True          # equal score: new best, counter reset
    assert (stopper.best_epoch, stopper.best_metrics, stopper.counter) == (3, "m3", 0)
    assert stopper.update(4, 0.10, "m4") is False and not stopper.early_stop
    assert stopper.update(5, 0.15, "m5") is False and stopper.early_stop  # 2 out of 2
    assert stopper.best_epoch == 3


def test_early_stopping_state_round_trip():
    stopper = EarlyStopping(patience=3)
    stopper.update(1, 0.5, "a")
    stopper.update(2, 0.4, "b")
    restored = EarlyStopping(patience=3)
    restored.load_state_dict(stopper.state_dict())
    assert vars(restored) == vars(stopper)


def test_format_metrics_matches_published_lines():
    text = format_metrics([5, 10], [(0.0674, 0.0912, 0.0950), (0.0602, 0.1392, 0.1105)])
    assert text == ("Precision@5:  0.0674, Recall@5:  0.0912, NDCG@5:  0.0950\n"
                    "Precision@10: 0.0602, Recall@10: 0.1392, NDCG@10: 0.1105")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]
    with atomic_write(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_names_the_final_file_in_os_errors(tmp_path):
    """A folder in the way of the rename: the error names the target, not the temporary file, and
    no temporary file is left."""
    target = tmp_path / "out.csv"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as failed:
        with atomic_write(target) as handle:
            handle.write("x")
    assert failed.value.filename == str(target) and failed.value.filename2 is None
    assert os.listdir(tmp_path) == ["out.csv"]


def test_regular_file_names_what_stands_in_its_place(tmp_path):
    (tmp_path / "file.csv").write_text("a\n")
    assert regular_file(str(tmp_path / "file.csv"), "unused") == tmp_path / "file.csv"
    (tmp_path / "folder.csv").mkdir()
    os.mkfifo(tmp_path / "pipe.csv")
    cases = {"folder.csv": "is a folder, not a file: fix it",
             "pipe.csv": "is a special file (a device, pipe or socket), not a regular file: fix it"}
    for name, words in cases.items():
        with pytest.raises(InputError) as raised:
            regular_file(tmp_path / name, "unused", "fix it")
        assert str(raised.value) == f"{tmp_path / name} {words}"
    with pytest.raises(InputError) as raised:
        regular_file(tmp_path / "absent.csv", "absent.csv is missing: make it")
    assert str(raised.value) == "absent.csv is missing: make it"
