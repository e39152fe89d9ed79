"""main.py's saved files and --resume (checkpoint.py), the run lock, OS errors and the per-user CSV.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_main_checkpoint.py

Each test runs the real entry point (main.main) on a small synthetic dataset, on the CPU; the
CUDA cases (marker cuda) run where a GPU is present and skip elsewhere.
"""
import csv
import errno
import math
import os
import subprocess
import sys

import pytest
import torch

import checkpoint
import devices
import main
import utils
from helpers import DEVICES, ROOT, SMALL, assert_one_error_line, run_main, snapshot, write_synthetic_dataset

STATE = "result/TOY/run.last.pt"


def edit_state(path, change):
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def tensors_in(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors_in(value)


# --- What may change on --resume --------------------------------------------------------------------------

@pytest.mark.parametrize("changed", [["--flush_denormal"], ["--sampler", "sparse"], ["--duplicate_pairs", "first"],
                                     ["--learning_rate", "0.02"]])
def test_a_flag_not_on_the_may_change_list_is_refused_on_resume(copy_of_finished_run, tmp_path, capsys, changed):
    before = snapshot(tmp_path / "result")
    code, out, err = run_main(copy_of_finished_run + ["--epochs", "3", "--resume"] + changed, capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, STATE, f"other values of {changed[0]}", "rerun with the same values")
    assert snapshot(tmp_path / "result") == before


def test_flags_on_the_may_change_list_resume(copy_of_finished_run, capsys):
    extra = ["--epochs", "3", "--threads", "1", "--test_batch_size", "7", "--gpu_id", "0", "--eval_protocol", "strict"]
    code, out, err = run_main(copy_of_finished_run + extra + ["--resume"], capsys)
    assert code == 0 and "resumed after epoch 2" in err and "\nEpoch: 003" in out


# --- Saved with CPU tensors; CUDA random states ------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_every_tensor_saved_is_on_the_cpu(toy, tmp_path, capsys, device):
    argv = [arg if arg != "cpu" else device for arg in toy]  # the fixture's --device cpu
    assert run_main(argv + ["--epochs", "2"], capsys)[0] == 0
    for name in ("nothing.pt", "nothing.last.pt", "TOY_not_early_stop.pt"):
        path = tmp_path / "result" / ("TOY" if name.startswith("nothing") else "") / name
        saved = list(tensors_in(torch.load(path, weights_only=True)))  # no map_location: as saved
        assert saved and {tensor.device.type for tensor in saved} == {"cpu"}, name
    rng = torch.load(tmp_path / "result/TOY/nothing.last.pt", weights_only=True)["rng"]
    # The CUDA random state of the run's own device only: a tensor, none for a CPU run.
    assert ("cuda" in rng) == (device == "cuda") and not isinstance(rng.get("cuda"), list)


@pytest.mark.parametrize("cuda_state", ["two GPUs (older format)", "one GPU"])
def test_a_state_with_cuda_random_states_resumes_on_the_cpu(copy_of_finished_run, tmp_path, capsys, cuda_state):
    """A state written on a GPU machine (older states: every visible GPU's state) continues here."""
    def add_cuda_states(state):
        fake = state["rng"]["torch"][:16].clone()  # a byte tensor, as torch.cuda.get_rng_state gives
        state["rng"]["cuda"] = [fake, fake.clone()] if cuda_state.startswith("two") else fake

    edit_state(tmp_path / STATE, add_cuda_states)
    code, out, err = run_main(copy_of_finished_run + ["--epochs", "3", "--resume"], capsys)
    assert code == 0 and "resumed after epoch 2" in err and "\nEpoch: 003" in out


def test_an_older_state_without_this_gpus_random_state_is_one_error(tmp_path):
    """Older states hold the CUDA states by GPU number: resuming on cuda:2 with 2 saved is refused
    (before any CUDA call, so this runs without a GPU)."""
    state = checkpoint.rng_state(torch.device("cpu"))
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 2
    with pytest.raises(utils.InputError, match=r"2 GPU\(s\).*none for cuda:2.*--device cuda:0"):
        checkpoint.set_rng_state(state, torch.device("cuda", 2), tmp_path / "run.last.pt")


@pytest.mark.cuda
def test_a_run_trained_on_the_gpu_resumes_and_tests_on_the_cpu(toy, capsys):
    argv = [arg if arg != "cpu" else "cuda" for arg in toy]
    assert run_main(argv + ["--epochs", "2"], capsys)[0] == 0
    code, out, err = run_main(toy + ["--epochs", "3", "--resume"], capsys)
    assert code == 0 and "resumed after epoch 2" in err and "Final Test Results" in out


# --- Damaged files --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [
    ("epoch", "3"), ("epoch", -1), ("elapsed", float("nan")), ("history", "lines"), ("args", 5),
    ("early_stopping", {}), ("model", {"weight": "not a tensor"}), ("data_sha256", {"a": 1}),
    ("rng.torch", [1, 2, 3]), ("rng.numpy", ("MT19937", "keys", 0, 0, 0.0)), ("rng.cuda", "not a tensor"),
])
def test_a_state_of_the_wrong_schema_is_one_error(copy_of_finished_run, tmp_path, capsys, key, value):
    def damage(state):
        *parents, last = key.split(".")
        target = state
        for parent in parents:
            target = target[parent]
        target[last] = value

    edit_state(tmp_path / STATE, damage)
    before = snapshot(tmp_path / "result")
    code, out, err = run_main(copy_of_finished_run + ["--epochs", "3", "--resume"], capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, f"--resume: {STATE} is damaged: its '{key.split('.')[0]}'", "rerun without --resume")
    assert snapshot(tmp_path / "result") == before


def test_a_truncated_best_checkpoint_on_resume_is_one_error(copy_of_finished_run, tmp_path, capsys):
    best = tmp_path / "result/TOY/run.pt"
    best.write_bytes(best.read_bytes()[:best.stat().st_size // 2])
    before = snapshot(tmp_path / "result")
    code, out, err = run_main(copy_of_finished_run + ["--epochs", "3", "--resume"], capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, "result/TOY/run.pt cannot be read as a model checkpoint", "rerun without --resume")
    assert snapshot(tmp_path / "result") == before


def test_a_best_checkpoint_truncated_before_the_final_test_is_one_error(toy, tmp_path, capsys, monkeypatch):
    report_training = main.report_training

    def truncate_then_report(*args):
        best = tmp_path / "result/TOY/nothing.pt"
        best.write_bytes(best.read_bytes()[:100])
        return report_training(*args)

    monkeypatch.setattr(main, "report_training", truncate_then_report)
    code, out, err = run_main(toy + ["--epochs", "2"], capsys)
    assert code == 2 and "Final Test Results" not in out
    assert_one_error_line(err, "result/TOY/nothing.pt cannot be read as a model checkpoint")
    assert not (tmp_path / "result/TOY/nothing.test.json").exists()


# --- OS errors --------------------------------------------------------------------------------------------------

def test_a_full_disk_while_saving_a_state_is_one_line_and_resumable(toy, tmp_path, capsys, monkeypatch):
    """The second state save hits a full disk (ENOSPC from write, as on a full tmpfs): one line naming
    the file and what to do; the first state is kept and --resume continues from it."""
    real_open, state_writes = open, []

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_filling_the_disk(name, *args, **kwargs):
        handle = real_open(name, *args, **kwargs)
        if ".nothing.last.pt." in str(name):  # atomic_write's temporary file
            state_writes.append(name)
            if len(state_writes) == 2:
                return FullDisk(handle)
        return handle

    monkeypatch.setattr(utils, "open", open_filling_the_disk, raising=False)
    code, _, err = run_main(toy + ["--epochs", "3"], capsys)
    assert code == 2
    assert_one_error_line(err, "result/TOY/nothing.last.pt: No space left on device (free space)",
                          "--resume to continue after epoch 1")
    assert sorted(path.name for path in (tmp_path / "result/TOY").iterdir()) == [
        "nothing.last.pt", "nothing.out", "nothing.pt"]  # no temporary file, no lock left
    monkeypatch.delattr(utils, "open")
    code, _, err = run_main(toy + ["--epochs", "3", "--resume"], capsys)
    assert code == 0 and "resumed after epoch 1" in err


def test_a_folder_in_the_way_of_the_final_test_is_one_line_and_resumable(toy, tmp_path, capsys, monkeypatch):
    """A real OS error (no mock): the per-user file's name taken by a folder after training began."""
    report_training, taken = main.report_training, tmp_path / "result/TOY/nothing.test_users.csv"

    def folder_in_the_way(*args):
        taken.mkdir()
        return report_training(*args)

    monkeypatch.setattr(main, "report_training", folder_in_the_way)
    code, _, err = run_main(toy + ["--epochs", "2"], capsys)
    assert code == 2
    assert_one_error_line(err, "error: result/TOY/nothing.test_users.csv: Is a directory; training finished",
                          "--resume to test it without training")
    assert not (tmp_path / "result/TOY/nothing.test.json").exists()
    taken.rmdir()
    monkeypatch.setattr(main, "report_training", report_training)
    code, out, err = run_main(toy + ["--epochs", "2", "--resume"], capsys)
    assert code == 0 and "resumed after epoch 2" in err and (tmp_path / "result/TOY/nothing.test.json").is_file()


def test_a_split_file_that_is_a_folder_is_one_line(toy, tmp_path, capsys):
    validation = tmp_path / "data/TOY/TOY_validation.csv"
    validation.unlink()
    validation.mkdir()
    code, out, err = run_main(toy + ["--epochs", "1"], capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, "TOY_validation.csv is a folder, not a file")
    assert not (tmp_path / "result").exists()


# --- One writer per run -----------------------------------------------------------------------------------

def test_a_second_process_on_the_same_run_is_refused_until_the_first_ends(toy, tmp_path, capsys):
    lock = tmp_path / "result/TOY/nothing.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time, checkpoint, pathlib\n"
                               f"with checkpoint.run_lock(pathlib.Path({str(lock)!r})):\n"
                               f"    print('locked', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline() == "locked\n"
        code, out, err = run_main(toy + ["--epochs", "1"], capsys)
        assert code == 2 and out == ""
        assert_one_error_line(err, f"another main.py (pid {holder.pid}) is writing this run", "--path_name")
        assert not (tmp_path / "result/TOY/nothing.out").exists()
        assert run_main(toy + ["--epochs", "1", "--path_name", "other"], capsys)[0] == 0  # another run: free
    finally:
        holder.kill()  # SIGKILL: no clean-up, the kernel releases the lock
        holder.wait()
    assert lock.exists()  # the dead holder's file stays, unlocked
    assert run_main(toy + ["--epochs", "1"], capsys)[0] == 0
    assert not lock.exists()


def test_a_second_run_is_refused_before_the_slow_imports(toy, tmp_path):
    """The script checks the lock with the flags: refused even by a Python without torch (-S: no
    site-packages), so before torch loads; without the lock held, that Python gets the one line that
    says to activate the virtual environment instead of a traceback."""
    lock = tmp_path / "result/TOY/nothing.lock"
    lock.parent.mkdir(parents=True)
    script = [sys.executable, "-S", str(ROOT / "main.py"), *toy, "--epochs", "1"]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time, checkpoint, pathlib\n"
                               f"with checkpoint.run_lock(pathlib.Path({str(lock)!r})):\n"
                               f"    print('locked', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline() == "locked\n"
        refused = subprocess.run(script, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and refused.stdout == ""
        assert_one_error_line(refused.stderr, f"another main.py (pid {holder.pid}) is writing this run", "--path_name")
    finally:
        holder.kill()
        holder.wait()
    no_torch = subprocess.run(script, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert no_torch.returncode == 2 and no_torch.stdout == ""
    assert_one_error_line(no_torch.stderr, "torch", "not installed", "activate the virtual environment: "
                          "source .venv/bin/activate")
    assert lock.exists() and not (tmp_path / "result/TOY/nothing.out").exists()


def test_the_early_probe_never_refuses_the_run_that_takes_the_lock(tmp_path):
    """cli.check_run_lock holds a shared lock for a moment; run_lock waits that moment out."""
    import fcntl
    import os
    import threading

    lock = tmp_path / "run.lock"
    lock.write_text("")
    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a probe, caught in the middle
    threading.Timer(0.1, os.close, [fd]).start()
    with checkpoint.run_lock(lock):
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()


# --- Per-user test metrics with string ids ----------------------------------------------------------------

def test_per_user_metrics_with_commas_and_quotes_in_ids_read_back_equal(tmp_path, capsys, monkeypatch):
    folder = write_synthetic_dataset(tmp_path / "data", "TOY")
    for path in folder.iterdir():  # user 7 -> "user, 7" and user 8 -> 'say "8"', quoted as CSV quotes them
        rows = list(csv.reader(path.read_text().splitlines()))
        for row in rows[1:]:
            row[0] = f"user, {row[0]}" if row[0] != "8" else 'say "8"'
        with path.open("w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows)
    monkeypatch.chdir(tmp_path)
    code, _, _ = run_main(["--data_dir", str(tmp_path / "data"), "--device", "cpu"] + SMALL + ["--epochs", "2"], capsys)
    assert code == 0
    with open(tmp_path / "result/TOY/nothing.test_users.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["user_id", "precision@10", "recall@10", "ndcg@10"]
    with open(folder / "TOY_test.csv", newline="") as handle:
        test_users = {row[0] for row in list(csv.reader(handle))[1:]}
    assert {row[0] for row in rows[1:]} == test_users and 'say "8"' in test_users and "user, 7" in test_users
    assert all(len(row) == 4 and all(0 <= float(value) <= 1 and math.isfinite(float(value)) for value in row[1:])
               for row in rows[1:])


# --- The device line and the fallback warning ------------------------------------------------------------

@pytest.mark.parametrize("device_flag", ["auto", "cpu"])
def test_auto_falling_back_to_the_cpu_beside_an_unusable_gpu_warns_once(toy, capsys, monkeypatch, device_flag):
    """Pinned to the CPU: torch sees no CUDA; the machine is made to look as if it had an NVIDIA GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_gpu_visible", lambda: True)
    argv = [arg if arg != "cpu" else device_flag for arg in toy]
    code, out, err = run_main(argv + ["--epochs", "1"], capsys)
    assert code == 0 and "\ndevice: cpu\n" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning: an NVIDIA GPU is present")]
    assert len(warnings) == (1 if device_flag == "auto" else 0)


# --- How often the state is written (checkpoint.StateWriter) --------------------------------------------------

def test_the_state_writer_holds_states_until_their_time_and_writes_the_held_one_at_a_stop(tmp_path, monkeypatch):
    clock, written = [0.0], []
    monkeypatch.setattr(checkpoint.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(checkpoint, "save", lambda state, path: written.append(state["epoch"]))
    writer = checkpoint.StateWriter(tmp_path / "run.last.pt", 30.0, 0)
    for epoch, seconds in ((1, 10), (2, 20), (3, 31), (4, 40)):
        clock[0] = seconds
        writer.keep(epoch, {"epoch": epoch}, now=False)
    assert written == [3] and writer.saved_epoch == 3  # 30 s after the start; epoch 4 is held
    writer.keep(5, {"epoch": 5}, now=True)  # a new best or the last epoch
    assert written == [3, 5] and not writer.write_held()
    writer.keep(6, {"epoch": 6}, now=False)
    assert writer.write_held() and written == [3, 5, 6] and writer.saved_epoch == 6  # a stop's write


def test_a_state_write_cut_by_a_stop_is_written_again_but_a_failed_one_is_not(tmp_path, monkeypatch):
    calls = []

    def cut_once(state, path):
        calls.append(state["epoch"])
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", cut_once)
    writer = checkpoint.StateWriter(tmp_path / "run.last.pt", 0.0, 0)
    with pytest.raises(KeyboardInterrupt):
        writer.keep(1, {"epoch": 1}, now=True)
    assert writer.write_held() and writer.saved_epoch == 1 and calls == [1, 1]

    def full_disk(state, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save", full_disk)
    with pytest.raises(OSError):
        writer.keep(2, {"epoch": 2}, now=True)
    assert not writer.write_held() and writer.saved_epoch == 1
