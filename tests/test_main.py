"""End-to-end runs of main.py on synthetic data (and 2 epochs of ML-100K where its published splits are found)."""
import json
import re
import subprocess
import sys

import pytest

import main
import metrics
import training
from helpers import ORACLE_DIR, ROOT, run_main, without_timing

PUBLISHED_DEFAULTS = {
    "random_seed": 2024, "gpu_id": 4, "dataset": "ML-100K", "dataset_augment": 1, "batch_size": 1024,
    "test_batch_size": 8192, "embedding_dim": 64, "layers": 4, "learning_rate": 0.001, "evaluation_step": 1,
    "early_stopping_step": 50, "top_k": [5, 10, 15, 20], "epochs": 1000, "real_neg_samp_prob": 1.5,
    "p": 1.5, "q": 0.75, "r": 100, "s": 5, "t": 50, "path_name": "nothing",
}
METRIC_LINE = r"Precision@\d+: +\d\.\d{4}, Recall@\d+: +\d\.\d{4}, NDCG@\d+: +\d\.\d{4}"


def test_parser_defaults_equal_published():
    args = vars(main.build_parser().parse_args([]))
    assert {key: args[key] for key in PUBLISHED_DEFAULTS} == PUBLISHED_DEFAULTS
    # The published flags come first, in the published order.
    assert list(args)[:len(PUBLISHED_DEFAULTS)] == list(PUBLISHED_DEFAULTS)


def test_training_config_defaults_are_the_published_flags():
    """TrainConfig() (what bench and tests build) equals the configuration of main.py's default flags,
    and from_flags takes each field from its own flag."""
    assert training.TrainConfig() == training.TrainConfig.from_flags(main.build_parser().parse_args([]))
    assert {name: getattr(training.TrainConfig(), name) for name in ("batch_size", "embedding_dim", "layers",
            "learning_rate", "real_neg_samp_prob", "p", "q", "r", "s", "t")} == \
        {name: PUBLISHED_DEFAULTS[name] for name in ("batch_size", "embedding_dim", "layers", "learning_rate",
                                                     "real_neg_samp_prob", "p", "q", "r", "s", "t")}
    flags = ["--model", "lightgcn", "--sampler", "sparse", "--refine_plus_negatives", "per_positive",
             "--batch_size", "7", "--embedding_dim", "8", "--layers", "2", "--learning_rate", "0.5",
             "--real_neg_samp_prob", "2.5", "--p", "3", "--q", "0.5", "--r", "9", "--s", "4", "--t", "11"]
    assert training.TrainConfig.from_flags(main.build_parser().parse_args(flags)) == training.TrainConfig(
        model="lightgcn", sampler="sparse", refine_plus_negatives="per_positive", batch_size=7, embedding_dim=8,
        layers=2, learning_rate=0.5, real_neg_samp_prob=2.5, p=3, q=0.5, r=9, s=4, t=11)


@pytest.mark.parametrize("value,expected", [("1", 1), ("0", 0), ("augment", 1), ("original", 0)])
def test_dataset_augment_spellings(value, expected):
    assert main.build_parser().parse_args(["--dataset_augment", value]).dataset_augment == expected


def test_end_to_end_log_structure(toy, tmp_path, capsys):
    code, out, _ = run_main(toy + ["--epochs", "12"], capsys)
    assert code == 0
    lines = out.splitlines()
    header = lines[1:lines.index("#" * 77, 1)]
    keys = [line.split(":")[0] for line in header]
    assert keys[:3] == ["ramdom_seed", "gpu_id", "dataset"]
    assert "real_negative_sampling_probabilities" in keys and keys.index("path_name") < keys.index("data_dir")
    assert "top_k: [1, 5, 10]" in header
    assert re.search(r"data loading...\ntrain set: train_augment\nuser: 40,  item: \d+\n"
                     r"train interations: \d+\nvalid interations: \d+\ntest interations: \d+\ndone!\n", out)
    blocks = re.findall(rf"\nEpoch: (\d{{3}}), Loss: (\d\.\d{{4}})\n(?:{METRIC_LINE}\n){{3}}"
                        r"(Save: result/TOY/nothing.pt|EarlyStopping counter: \d+ out of 50)\n", out)
    assert [int(epoch) for epoch, _, _ in blocks] == list(range(1, 13))
    losses = [float(loss) for _, loss, _ in blocks]
    assert losses[-1] < losses[0] * 0.8  # training reduces the BPR loss
    assert re.search(rf"Early stopping does not trigger.\nTesting the best checkpoint \(epoch \d+\).*\n\n#+\n"
                     rf"Final Test Results\n(?:{METRIC_LINE}\n){{3}}#+\n$", out)
    assert "device: cpu" in header  # the resolved device
    assert (tmp_path / "result/TOY/nothing.pt").is_file()
    test = json.loads((tmp_path / "result/TOY/nothing.test.json").read_text())
    assert set(test["test"]) == {"1", "5", "10"} and 1 <= test["best_epoch"] <= 12
    # The run's files, and no other (no lock left behind).
    assert sorted(path.name for path in (tmp_path / "result/TOY").iterdir()) == [
        "nothing.last.pt", "nothing.out", "nothing.pt", "nothing.test.json", "nothing.test_users.csv"]


def test_early_stop_reports_best_epoch(toy, capsys):
    code, out, _ = run_main(toy + ["--epochs", "200", "--early_stopping_step", "2", "--learning_rate", "0.05"], capsys)
    assert code == 0
    stop = re.search(r"\nEarly stopping at epoch (\d+)\. Best Validation Results:\n((?:.+\n){3})", out)
    assert stop, out[-2000:]
    best_epoch = int(stop.group(1))
    epoch_block = re.search(rf"\nEpoch: {best_epoch:03d}, Loss: .+\n((?:.+\n){{3}})Save:", out)
    assert epoch_block.group(1) == stop.group(2)  # best block = that epoch's validation lines
    assert out.count("EarlyStopping counter: 2 out of 2") == 1
    assert "Final Test Results" in out and "does not trigger" not in out


def test_two_runs_with_one_seed_are_identical(toy, capsys):
    first = run_main(toy + ["--epochs", "6"], capsys)[1]
    second = run_main(toy + ["--epochs", "6"], capsys)[1]
    assert without_timing(first) == without_timing(second)
    assert first != run_main(toy + ["--epochs", "6", "--random_seed", "1"], capsys)[1]


def test_deterministic_changes_nothing_on_the_cpu(toy, capsys, monkeypatch):
    """--deterministic: the same log on a CPU but its own header line; torch's setting and the cuBLAS
    variable are on during the run and restored after it."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    plain = run_main(toy + ["--epochs", "3", "--model", "refine_plus"], capsys)[1]
    seen = []
    validate = main.validate

    def recording(*args, **kwargs):
        seen.append((main.torch.are_deterministic_algorithms_enabled(), main.os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
        return validate(*args, **kwargs)

    monkeypatch.setattr(main, "validate", recording)
    deterministic = run_main(toy + ["--epochs", "3", "--model", "refine_plus", "--deterministic"], capsys)[1]
    assert seen == [(True, ":4096:8")] * 3
    assert not main.torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in main.os.environ
    assert "\ndeterministic: True\n" in deterministic
    assert without_timing(deterministic.replace("deterministic: True\n", "")) == without_timing(plain)
    plain = run_main(toy + ["--epochs", "3", "--t", "2"], capsys)[1]  # ReFINe, its similarity step included
    deterministic = run_main(toy + ["--epochs", "3", "--t", "2", "--deterministic"], capsys)[1]
    assert without_timing(deterministic.replace("deterministic: True\n", "")) == without_timing(plain)


def test_interrupted_run_resumes_to_the_same_log(toy, tmp_path, capsys, monkeypatch):
    """Ctrl-C in epoch 5, then --resume: stdout and the log file equal an uninterrupted run's."""
    uninterrupted = run_main(toy + ["--epochs", "7"], capsys)[1]
    assert (tmp_path / "result/TOY/nothing.out").read_text() == uninterrupted

    evaluate, calls = metrics.evaluate, []

    def interrupt_in_epoch_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(metrics, "evaluate", interrupt_in_epoch_5)
    code, _, err = run_main(toy + ["--epochs", "7", "--path_name", "resumed"], capsys)
    assert code == 2 and "interrupted during epoch 5" in err and "--resume" in err
    monkeypatch.setattr(metrics, "evaluate", evaluate)
    code, resumed, err = run_main(toy + ["--epochs", "7", "--path_name", "resumed", "--resume"], capsys)
    assert code == 0 and "resumed after epoch 4" in err
    expected = uninterrupted.replace("nothing", "resumed")
    assert without_timing(resumed) == without_timing(expected)
    log_file = (tmp_path / "result/TOY/resumed.out").read_text()
    assert log_file == resumed and without_timing(log_file) == without_timing(expected)


@pytest.mark.parametrize("extra,message", [
    (["--top_k", "5", "500"], "--top_k 500 is larger than the item count"),
    (["--r", "1000"], "--r 1000 must be between 1 and the item count"),
    (["--s", "60"], "--s 60 must be between 1"),
    (["--device", "tpu"], "--device tpu"),
    (["--device", "cuda:7"], "--device cuda:7"),
    (["--dataset", "NOPE"], "NOPE_train_augment.csv"),
])
def test_bad_input_one_line_exit_2(toy, capsys, extra, message):
    code, _, err = run_main(toy + ["--epochs", "1"] + extra, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_cli_missing_data_exits_2(tmp_path):
    process = subprocess.run([sys.executable, str(ROOT / "main.py"), "--data_dir", str(tmp_path), "--device", "cpu"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert process.returncode == 2
    assert process.stderr.startswith("error: missing") and "download ML-100K --refined" in process.stderr


def test_ml100k_matches_published_code_on_cpu(ml100k_splits, tmp_path, monkeypatch, capsys):
    """Two epochs on the published splits: the statistics lines equal the published log, and the
    epoch blocks equal the published code's own CPU run (same RNG stream, draw for draw)."""
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_main(["--data_dir", str(ml100k_splits), "--epochs", "2", "--device", "cpu"], capsys)
    assert code == 0
    on_cpu = (ORACLE_DIR / "ReFINe_ML-100K.published-code-on-cpu.out").read_text()
    stats = "user: 938,  item: 1008\ntrain interations: 52984\nvalid interations: 5018\ntest interations: 10514\n"
    assert stats in on_cpu and stats in out
    for epoch in (1, 2):
        pattern = rf"\nEpoch: {epoch:03d}, Loss: .+\n(?:.+\n){{5}}"
        assert re.search(pattern, out).group(0) == re.search(pattern, on_cpu).group(0)


@pytest.mark.parametrize("module_name,stage,argv", [
    ("refine_llm", "stage_prompts", ["run", "ML-100K"]),
    ("dataloader", "preprocess_command", ["preprocess", "ML-100K"]),
])
def test_ctrl_c_in_other_commands_is_one_line_and_exit_2(module_name, stage, argv, monkeypatch, capsys):
    """Like main.py's: an interrupted refine_llm / data_prep command ends with one error line, code 2."""
    module = __import__(module_name)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, stage, interrupted)
    assert module.main(argv + ["--data_dir", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: interrupted")
