"""Bad input, bad files and Ctrl-C in main.py: one `error:` line, exit code 2, nothing half-written.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_main_errors.py

One test per cause of issue 10 that concerns main.py, each on the real entry point (main.main, or
`python main.py` where the flags alone decide) and a small synthetic dataset.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import main
import metrics
import training
from helpers import (ROOT, SMALL, assert_one_error_line, ctrl_c_enabled, run_main, snapshot, without_timing,
                     write_synthetic_dataset)


# --- Cause 1: a train user with no possible negative -------------------------------------------------

@pytest.mark.parametrize("model_name,positive_items", [("refine", 60), ("lightgcn", 60), ("refine_plus", 55)])
def test_user_without_enough_negatives_is_named(toy, tmp_path, capsys, model_name, positive_items):
    """ReFINe and LightGCN need 1 item outside a user's positives; ReFINe++ needs item count // 10 = 6."""
    train = tmp_path / "data/TOY/TOY_train_augment.csv"
    with train.open("a") as handle:
        handle.writelines(f"777,{item},5\n" for item in range(1, positive_items + 1))
    code, out, err = run_main(toy + ["--epochs", "1", "--model", model_name], capsys)
    assert code == 2
    assert_one_error_line(err, str(train), "user 777")
    assert "Epoch:" not in out and not (tmp_path / "result/TOY/nothing.last.pt").exists()


def test_a_user_with_one_free_item_trains(toy, tmp_path, capsys):
    """The bound is exact: 59 of 60 items positive leaves one negative to draw (ReFINe)."""
    with (tmp_path / "data/TOY/TOY_train_augment.csv").open("a") as handle:
        handle.writelines(f"777,{item},5\n" for item in range(1, 60))
    assert run_main(toy + ["--epochs", "1"], capsys)[0] == 0


# --- Cause 2: flag values, checked before torch is imported -------------------------------------------

@pytest.mark.parametrize("flag,value", [
    ("--learning_rate", "-0.01"), ("--learning_rate", "nan"), ("--learning_rate", "0"),
    ("--real_neg_samp_prob", "-1"), ("--real_neg_samp_prob", "inf"), ("--p", "-1"), ("--p", "nan"),
    ("--q", "inf"), ("--q", "0"), ("--t", "0"), ("--top_k", "0"), ("--epochs", "-1"), ("--batch_size", "0"),
    ("--r", "-5"), ("--early_stopping_step", "-1"), ("--random_seed", "-1"), ("--threads", "0"),
    ("--epochs", "abc"),
])
def test_bad_flag_value_is_one_line_before_any_work(tmp_path, flag, value):
    process = subprocess.run([sys.executable, str(ROOT / "main.py"), flag, value, "--data_dir", str(tmp_path),
                              "--device", "cpu"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert process.returncode == 2 and process.stdout == ""
    assert_one_error_line(process.stderr, flag)
    assert not (tmp_path / "result").exists()


def test_published_defaults_and_a_late_t_pass_the_flag_checks():
    main.check_flags(main.build_parser().parse_args([]))
    main.check_flags(main.build_parser().parse_args(["--t", "5000", "--epochs", "10"]))  # t > epochs: no refinement


# --- Cause 3: a corrupt, truncated or wrong-kind .last.pt ---------------------------------------------

def truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def random_bytes(path):
    path.write_bytes(bytes(range(256)) * 40)


def best_checkpoint_copy(path):
    shutil.copy(path.with_name("run.pt"), path)


def other_dict(path):
    torch.save({"epoch": 3, "note": "not a state"}, path)


def empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage,words", [
    (truncated, "cannot be read"), (random_bytes, "cannot be read"), (empty, "cannot be read"),
    (best_checkpoint_copy, "a model checkpoint"), (other_dict, "not a training state"),
])
def test_resume_from_a_bad_state_file(copy_of_finished_run, tmp_path, capsys, damage, words):
    state_path = tmp_path / "result/TOY/run.last.pt"
    damage(state_path)
    before = snapshot(tmp_path / "result")
    code, out, err = run_main(copy_of_finished_run + ["--epochs", "4", "--resume"], capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, f"--resume: {Path('result/TOY/run.last.pt')}", words, "rerun without --resume")
    assert snapshot(tmp_path / "result") == before


# --- Cause 4: output paths taken by a file or a folder ------------------------------------------------

@pytest.mark.parametrize("taken,as_folder", [
    ("result", False), ("result/TOY", False), ("result/TOY/nothing.last.pt", True), ("result/TOY/nothing.pt", True),
    ("result/TOY/nothing.out", True), ("result/TOY/nothing.lock", True),
    ("result/TOY/nothing.test.json", True), ("result/TOY_not_early_stop.pt", True),
])
def test_unwritable_output_path_stops_before_epoch_1(toy, tmp_path, capsys, taken, as_folder):
    path = tmp_path / taken
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir() if as_folder else path.write_text("in the way\n")
    before = snapshot(tmp_path)
    code, out, err = run_main(toy + ["--epochs", "1"], capsys)
    assert code == 2 and "Epoch:" not in out and out == ""
    assert_one_error_line(err, taken)
    assert snapshot(tmp_path) == before


# --- Cause 5: --resume after the data changed ---------------------------------------------------------

@pytest.mark.parametrize("changed_file,change", [
    ("TOY_train_augment.csv", lambda text: text + "1,59,2\n"),  # one train row added (a neutral: same shapes)
    ("TOY_validation.csv", lambda text: text.rsplit("\n", 2)[0] + "\n"),  # last validation row removed
])
def test_resume_after_the_data_changed(copy_of_finished_run, tmp_path, capsys, changed_file, change):
    path = tmp_path / "data/TOY" / changed_file
    path.write_text(change(path.read_text()))
    before = snapshot(tmp_path / "result")
    code, out, err = run_main(copy_of_finished_run + ["--epochs", "4", "--resume"], capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, changed_file, "changed since", "run.last.pt")
    assert snapshot(tmp_path / "result") == before


def test_resume_of_unchanged_data_continues(copy_of_finished_run, capsys):
    code, out, err = run_main(copy_of_finished_run + ["--epochs", "3", "--resume"], capsys)
    assert code == 0 and "resumed after epoch 2" in err and "\nEpoch: 003" in out


# --- Causes 6 and 7: Ctrl-C before any state, during loading, during the final test -------------------

def interrupt_on_call(monkeypatch, module, name, call_number):
    """Replace module.name by a wrapper that raises KeyboardInterrupt on its call_number-th call."""
    original, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call_number:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return original


def test_ctrl_c_in_epoch_1_says_nothing_can_be_resumed(toy, tmp_path, capsys, monkeypatch):
    interrupt_on_call(monkeypatch, metrics, "evaluate", 1)
    code, _, err = run_main(toy + ["--epochs", "3"], capsys)
    assert code == 2
    assert_one_error_line(err, "interrupted during epoch 1", "nothing can be resumed")
    assert "--resume" not in err and not (tmp_path / "result/TOY/nothing.last.pt").exists()


def test_ctrl_c_in_epoch_3_names_the_epoch_it_continues_after(toy, tmp_path, capsys, monkeypatch):
    interrupt_on_call(monkeypatch, metrics, "evaluate", 3)
    code, out, err = run_main(toy + ["--epochs", "4"], capsys)
    assert code == 2
    assert_one_error_line(err, "interrupted during epoch 3", "--resume to continue after epoch 2")
    assert torch.load(tmp_path / "result/TOY/nothing.last.pt", weights_only=True)["epoch"] == 2
    # The log file holds what stdout showed up to the last finished epoch.
    assert (tmp_path / "result/TOY/nothing.out").read_text() == out


def test_ctrl_c_right_after_an_epoch_is_saved_offers_that_epoch(toy, tmp_path, capsys, monkeypatch):
    """Between epoch 2's state file and the log's rewrite (where a stop sent on seeing the file lands)."""
    interrupt_on_call(monkeypatch, main.RunLog, "save", 2)
    code, _, err = run_main(toy + ["--epochs", "4"], capsys)
    assert code == 2
    assert_one_error_line(err, "interrupted after epoch 2", "--resume to continue after epoch 2")
    assert torch.load(tmp_path / "result/TOY/nothing.last.pt", weights_only=True)["epoch"] == 2


def test_a_stop_whose_interrupt_was_swallowed_ends_the_run_after_the_epoch(toy, tmp_path, capsys, monkeypatch):
    """Python only warns when a KeyboardInterrupt lands in a finalizer; the loop still stops at the next epoch."""
    import entry
    original = main.RunLog.save

    def save_and_swallow_a_stop(self):
        original(self)
        if "Epoch: 002" in self.getvalue():
            monkeypatch.setattr(entry, "stop_requested", True)

    monkeypatch.setattr(main.RunLog, "save", save_and_swallow_a_stop)
    code, out, err = run_main(toy + ["--epochs", "4"], capsys)
    assert code == 2 and "Epoch: 003" not in out
    assert_one_error_line(err, "interrupted after epoch 2", "--resume to continue after epoch 2")


@pytest.mark.parametrize("stopped", [True, False])
def test_an_error_a_library_raises_while_a_stop_unwinds_is_reported_as_the_stop(toy, capsys, monkeypatch, stopped):
    """A library may turn the KeyboardInterrupt of a stop into its own error; without a stop, an error is a bug
    and keeps its traceback."""
    import entry

    def stopped_inside_a_library(*args):
        monkeypatch.setattr(entry, "stop_requested", stopped)  # as the stop handler does
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("library cleanup failed")  # noqa: B904 (as a library would)

    monkeypatch.setattr(training, "train_bpr_epoch", stopped_inside_a_library)
    if not stopped:
        with pytest.raises(RuntimeError, match="library cleanup failed"):
            run_main(toy + ["--epochs", "2"], capsys)
        return
    code, _, err = run_main(toy + ["--epochs", "2"], capsys)
    assert code == 2
    assert_one_error_line(err, "interrupted during epoch 1", "nothing can be resumed")


@pytest.mark.parametrize("resume", [False, True])
def test_ctrl_c_during_data_loading(copy_of_finished_run, tmp_path, capsys, monkeypatch, resume):
    interrupt_on_call(monkeypatch, main.splits, "load_splits", 1)
    before = snapshot(tmp_path / "result")
    code, _, err = run_main(copy_of_finished_run + ["--epochs", "3"] + ["--resume"] * resume, capsys)
    assert code == 2
    if resume:
        assert_one_error_line(err, "interrupted before training", "run.last.pt is unchanged", "resume from it")
    else:
        assert_one_error_line(err, "interrupted while loading the data", "nothing can be resumed")
    assert snapshot(tmp_path / "result") == before


def test_ctrl_c_during_the_final_test_then_resume_tests_without_training(toy, tmp_path, capsys, monkeypatch):
    uninterrupted = run_main(toy + ["--epochs", "3"], capsys)[1]
    ranked_items = interrupt_on_call(monkeypatch, metrics, "ranked_items", 4)  # 3 validations, then the test
    code, _, err = run_main(toy + ["--epochs", "3", "--path_name", "cut"], capsys)
    assert code == 2
    assert_one_error_line(err, "interrupted during the final test", "result/TOY/cut.pt", "--resume to test it")
    assert not (tmp_path / "result/TOY/cut.test.json").exists()
    monkeypatch.setattr(metrics, "ranked_items", ranked_items)
    code, resumed, err = run_main(toy + ["--epochs", "3", "--path_name", "cut", "--resume"], capsys)
    assert code == 0 and "resumed after epoch 3" in err
    assert without_timing(resumed) == without_timing(uninterrupted.replace("nothing", "cut"))
    assert (tmp_path / "result/TOY/cut.out").read_text() == resumed
    tested, reference = (json.loads((tmp_path / f"result/TOY/{name}.test.json").read_text())
                         for name in ("cut", "nothing"))
    assert tested.pop("train_seconds") > 0 and reference.pop("train_seconds") > 0
    assert tested == reference


def test_ctrl_c_while_importing_is_one_line(tmp_path):
    """The handler main.py installs before its slow imports (run as a script)."""
    write_synthetic_dataset(tmp_path / "data", "TOY")  # the split files are checked before the handler is set
    argv = ["main.py", "--data_dir", str(tmp_path / "data"), "--dataset", "TOY", "--device", "cpu"]
    code = (f"import os, signal, sys, time; sys.argv = {argv!r}; import cli; cli.parse_before_imports(); "
            "os.kill(os.getpid(), signal.SIGINT); time.sleep(5)")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                             preexec_fn=ctrl_c_enabled)
    assert process.returncode == 2
    assert_one_error_line(process.stderr, "interrupted while starting", "nothing can be resumed")


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_even_where_ctrl_c_is_ignored(tmp_path):
    """A background job ignores SIGINT; SIGTERM (a scheduler's stop, experiments.py's) keeps the finished
    epochs, says so in one line, and --resume then finishes the run."""
    write_synthetic_dataset(tmp_path / "data", "TOY")
    command = [sys.executable, str(ROOT / "main.py"), "--data_dir", str(tmp_path / "data"), "--device", "cpu",
               *SMALL, "--epochs", "60", "--early_stopping_step", "100"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    state = tmp_path / "result/TOY/nothing.last.pt"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert_one_error_line(err, "interrupted ", "epoch", "--resume to continue after epoch")
    resumed = subprocess.run(command + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and resumed.stdout.count("\nEpoch: ") == 60


# --- Metrics files stay valid JSON ---------------------------------------------------------------------

def test_a_diverged_loss_is_an_error_not_nan_in_json(toy, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(training, "train_bpr_epoch", lambda *args: float("nan"))
    code, out, err = run_main(toy + ["--epochs", "2"], capsys)
    assert code == 2 and "Epoch:" not in out
    assert_one_error_line(err, "epoch 1", "loss is nan", "--learning_rate")
    assert not (tmp_path / "result/TOY/nothing.last.pt").exists()


def test_to_json_refuses_nan():
    with pytest.raises(main.InputError, match="the test metrics: a value is NaN"):
        main.to_json({"recall": float("nan")}, "the test metrics")


# --- How often the state is written (--save_every_s); the log file appended ---------------------------------

def count_state_writes(monkeypatch):
    import checkpoint
    original, epochs = checkpoint.save, []

    def counted(obj, path):
        if str(path).endswith(".last.pt"):
            epochs.append(obj["epoch"])
        return original(obj, path)

    monkeypatch.setattr(checkpoint, "save", counted)
    return epochs


def test_the_state_is_written_at_new_bests_and_the_end_and_a_stop_resumes_from_the_last_epoch(
        toy, tmp_path, capsys, monkeypatch):
    """--save_every_s far above the run: the state is written at each new best and after the last epoch
    only; a stop in epoch 6 writes the held state of epoch 5 first, and --resume gives the same log."""
    argv = toy + ["--epochs", "7", "--save_every_s", "1e9", "--learning_rate", "0.05"]
    written = count_state_writes(monkeypatch)
    code, whole, _ = run_main(argv, capsys)
    assert code == 0
    bests = [int(epoch) for epoch in re.findall(r"Epoch: (\d+), Loss: .*\n(?:.+\n){3}Save:", whole)]
    assert written == sorted(set(bests) | {7}) and len(written) < 7  # some epochs were held, not written
    written.clear()
    evaluate = interrupt_on_call(monkeypatch, metrics, "evaluate", 6)
    code, _, err = run_main(argv + ["--path_name", "cut"], capsys)
    assert code == 2 and written[-1] == 5
    assert_one_error_line(err, "interrupted during epoch 6", "--resume to continue after epoch 5")
    assert torch.load(tmp_path / "result/TOY/cut.last.pt", weights_only=True)["epoch"] == 5
    monkeypatch.setattr(metrics, "evaluate", evaluate)
    code, resumed, err = run_main(argv + ["--path_name", "cut", "--resume"], capsys)
    assert code == 0 and "resumed after epoch 5" in err
    expected = without_timing(whole.replace("nothing", "cut"))
    assert without_timing(resumed) == expected
    assert without_timing((tmp_path / "result/TOY/cut.out").read_text()) == expected


def test_a_state_write_that_fails_is_not_retried_and_the_line_names_the_state_on_disk(toy, tmp_path, capsys,
                                                                                     monkeypatch):
    import checkpoint
    original, calls = checkpoint.save, []

    def failing_after_the_first(obj, path):
        if str(path).endswith(".last.pt"):
            calls.append(obj["epoch"])
            if len(calls) > 1:
                raise OSError(28, "No space left on device", str(path))
        return original(obj, path)

    monkeypatch.setattr(checkpoint, "save", failing_after_the_first)
    code, _, err = run_main(toy + ["--epochs", "3", "--save_every_s", "0"], capsys)
    assert code == 2 and calls == [1, 2]  # epoch 2's write failed, and was not tried again
    assert_one_error_line(err, "No space left on device", "--resume to continue after epoch 1")


def test_a_closed_stdout_runs_and_writes_the_log_file(tmp_path):
    """`python main.py ... >&-`: Python has no sys.stdout; the run writes its log file alone, the same
    log as stdout shows when it is open."""
    write_synthetic_dataset(tmp_path / "data", "TOY")
    command = [sys.executable, str(ROOT / "main.py"), "--data_dir", str(tmp_path / "data"), "--device", "cpu",
               "--epochs", "2", "--threads", "1"] + SMALL
    opened = subprocess.run(command + ["--path_name", "open"], capture_output=True, text=True, cwd=tmp_path)
    closed = subprocess.run(["bash", "-c", 'exec "$@" >&-', "bash"] + command + ["--path_name", "closed"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert opened.returncode == 0 and closed.returncode == 0, closed.stderr
    assert "Traceback" not in closed.stderr
    log = (tmp_path / "result/TOY/closed.out").read_text()
    assert "Final Test Results" in log
    assert without_timing(log) == without_timing(opened.stdout.replace("path_name: open", "path_name: closed")
                                                 .replace("result/TOY/open.pt", "result/TOY/closed.pt"))


def test_a_path_with_a_byte_that_is_not_utf8_is_written_to_the_log_as_that_byte(tmp_path):
    """--data_dir and --result_dir with byte 0xff (Python decodes it to a surrogate): the run finishes,
    its log file holds the path's own bytes; a strict UTF-8 stdout shows them backslash-escaped."""
    data = tmp_path / os.fsdecode(b"data\xff")
    result = tmp_path / os.fsdecode(b"result\xff")
    write_synthetic_dataset(data, "TOY")
    command = [sys.executable, str(ROOT / "main.py"), "--data_dir", os.fsencode(data), "--result_dir",
               os.fsencode(result), "--device", "cpu", "--epochs", "2", "--threads", "1"] + SMALL
    process = subprocess.run(command, capture_output=True, cwd=tmp_path,
                             env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert process.returncode == 0, process.stderr.decode(errors="replace")
    log = (result / "nothing.out").read_bytes()
    assert b"data_dir: " + os.fsencode(data) + b"\n" in log and b"Final Test Results" in log
    assert b"data_dir: " + str(data).encode("utf-8", "backslashreplace") + b"\n" in process.stdout
    assert (result / "nothing.test.json").is_file()
