"""main.py's command line: complete --help, fast answers without torch, the log file, --threads.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_cli.py
"""
import os
import subprocess
import sys

import pytest
import torch

import cli
from helpers import ROOT, SMALL, run_main, write_synthetic_dataset

SLOW_MODULES = {"torch", "torch_geometric", "pandas", "numpy"}


def script(*argv, cwd=ROOT, python_flags=()):
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run([sys.executable, *python_flags, str(ROOT / "main.py"), "--device", "cpu", *argv],
                          capture_output=True, text=True, cwd=cwd, env=env)


def test_every_flag_has_a_help_text_and_shows_its_default():
    flags = [action for action in cli.build_parser()._actions if action.dest != "help"]
    assert len(flags) >= 29
    assert all(action.help and action.help.strip() for action in flags), \
        [action.dest for action in flags if not action.help]
    help_text = " ".join(script("--help").stdout.split())  # line wrapping aside
    for action in flags:
        assert action.option_strings[0] in help_text
    assert help_text.count("(default:") == len(flags)
    assert "(default: 2024)" in help_text and "(default: nothing)" in help_text  # --random_seed, --path_name
    assert "examples:" in help_text and "result/<dataset>/" in help_text and "<path_name>.out" in help_text


@pytest.mark.parametrize("argv", [["--help"], ["--learning_rate", "nan"], ["--epochs", "abc"],
                                  ["--data_dir", "/nonexistent-data-dir"]])
def test_help_and_flag_errors_import_no_torch(argv):
    """-X importtime lists every module imported: none of the slow ones may be among them (a missing
    split file is reported before torch too)."""
    process = script(*argv, python_flags=("-X", "importtime"))
    imported = {line.rsplit("|", 1)[-1].strip() for line in process.stderr.splitlines() if "import time:" in line}
    assert imported and not imported & SLOW_MODULES
    assert process.returncode == (0 if argv == ["--help"] else 2)


def test_log_file_equals_the_scripts_stdout(tmp_path):
    write_synthetic_dataset(tmp_path / "data", "TOY")
    process = script("--data_dir", str(tmp_path / "data"), *SMALL, "--epochs", "2", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert "Final Test Results" in process.stdout
    assert (tmp_path / "result/TOY/nothing.out").read_text() == process.stdout


def test_threads_flag_sets_torch_and_is_printed_only_when_given(tmp_path, monkeypatch, capsys):
    write_synthetic_dataset(tmp_path / "data", "TOY")
    monkeypatch.chdir(tmp_path)
    argv = ["--data_dir", str(tmp_path / "data"), "--device", "cpu"] + SMALL + ["--epochs", "1"]
    threads_before = torch.get_num_threads()
    try:
        code, with_threads, _ = run_main(argv + ["--threads", "1", "--path_name", "one"], capsys)
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads_before)
    code, default, _ = run_main(argv + ["--path_name", "one"], capsys)
    assert code == 0 and "\nthreads:" not in default
    header = with_threads.split("\n\n")[0].splitlines()
    assert header[-2:] == ["threads: 1", "#" * 77] and header[-3] == "model: refine"
    before_training = with_threads.split("\nEpoch: 001")[0]
    assert before_training.replace("threads: 1\n", "") == default.split("\nEpoch: 001")[0]


def numeric_flags():
    return [action for action in cli.build_parser()._actions if action.type in (int, float)]


def test_every_numeric_flag_has_bounds():
    """A numeric flag added without a range fails here (and would accept a value that breaks torch)."""
    assert {action.dest for action in numeric_flags()} == set(cli.BOUNDS)


@pytest.mark.parametrize("flag", sorted(cli.BOUNDS))
def test_a_huge_value_of_any_numeric_flag_is_refused_with_its_range(flag):
    low, high = cli.BOUNDS[flag]
    args = cli.build_parser().parse_args([])
    huge = 1e39 if isinstance(low, float) else 10 ** 40  # beyond float32 / any index
    setattr(args, flag, [huge] if flag == "top_k" else huge)
    with pytest.raises(cli.InputError) as refused:
        cli.check_flags(args)
    assert str(refused.value) == f"--{flag} {huge}: must be " + (
        f"a number from {low:g} to {high:g}" if isinstance(low, float) else f"an integer from {low} to {high}")
    setattr(args, flag, [high] if flag == "top_k" else high)  # the bound itself is allowed
    cli.check_flags(args)


@pytest.mark.parametrize("flag,value", [("--batch_size", "100000000000"), ("--p", "1e39"), ("--threads", "100000"),
                                        ("--real_neg_samp_prob", "1e-50")])
def test_an_out_of_range_flag_is_one_line_from_the_script(tmp_path, flag, value):
    process = script(flag, value, "--data_dir", str(tmp_path), cwd=tmp_path)
    assert process.returncode == 2 and process.stdout == ""
    assert process.stderr.startswith(f"error: {flag} ") and process.stderr.count("\n") == 1
    assert "must be" in process.stderr and "Traceback" not in process.stderr


@pytest.mark.parametrize("flag,value", [("--path_name", "../x"), ("--path_name", "/tmp/abs"), ("--path_name", "a/b"),
                                        ("--path_name", ".."), ("--dataset", ".."), ("--dataset", "../TOY"),
                                        ("--dataset", "a\\b"), ("--path_name", "")])
def test_names_that_are_paths_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, flag, value):
    write_synthetic_dataset(tmp_path / "data", "TOY")
    monkeypatch.chdir(tmp_path / "data")  # `..` would reach tmp_path
    argv = ["--data_dir", str(tmp_path / "data"), "--device", "cpu", *SMALL, "--epochs", "1", flag, value]
    code, out, err = run_main(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {flag} {value!r}: must be a name") and err.count("\n") == 1
    assert sorted(path.name for path in tmp_path.rglob("*")) == [
        "TOY", "TOY_test.csv", "TOY_train_augment.csv", "TOY_validation.csv", "data"]
