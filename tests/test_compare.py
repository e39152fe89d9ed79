"""Tests for compare.py: log parsing (published logs and synthetic ones), the diff table, the plot.

    python -m pytest -q tests/test_compare.py
"""
import matplotlib.image
import pytest

import compare
from helpers import ORACLE_DIR
from utils import InputError

RULE = "#" * 77


def metric_lines(metrics):
    """{k: (p, r, n)} -> the published metric lines (upstream pads 'Precision@5:' to align)."""
    lines = []
    for k, (p, r, n) in metrics.items():
        label = f"Precision@{k}:".ljust(13)
        lines.append(f"{label} {p:.4f}, Recall@{k}: {' ' if k < 10 else ''}{r:.4f}, NDCG@{k}: {' ' if k < 10 else ''}{n:.4f}")
    return lines


def write_log(
    path,
    header,
    epochs,
    saved,
    best_epoch=None,
    seconds=None,
    final=None,
    extra_header=(),
    before_final=(),
    best_block=True,
):
    """Write a log in the published layout; epochs: [(epoch, loss, {k: (p, r, n)})]."""
    lines = [RULE] + [f"{key}: {value}" for key, value in header.items()] + list(extra_header)
    lines += [RULE, "", RULE, "data loading...", "train set: train_augment", "user: 3,  item: 4",
              "train interations: 10", "valid interations: 2", "test interations: 3", "done!", RULE]
    counter = 0
    for epoch, loss, metrics in epochs:
        lines += ["", f"Epoch: {epoch:03d}, Loss: {loss:.4f}"] + metric_lines(metrics)
        if epoch in saved:
            counter = 0
            lines.append(f"Save: result/{header['dataset']}/nothing.pt")
        else:
            counter += 1
            lines.append(f"EarlyStopping counter: {counter} out of 50")
    lines.append("")
    lines += list(before_final)
    if best_block and best_epoch is not None:
        best = dict((e, m) for e, _, m in epochs)[best_epoch]
        lines += [f"Early stopping at epoch {best_epoch}. Best Validation Results:"] + metric_lines(best)
        lines.append("")
    if seconds is not None:
        lines += [f"Training completed in {seconds} seconds.", ""]
    if final is not None:
        lines += [RULE, "Final Test Results"] + metric_lines(final) + [RULE]
    path.write_text("\n".join(lines) + "\n")
    return path


REFINE_HEADER = {
    "ramdom_seed": 2024, "gpu_id": 4, "dataset": "ML-100K", "dataset_augment": 1,
    "batch_size": 1024, "test_batch_size": 8192, "embedding_dim": 64, "layers": 4,
    "learning_rate": 0.001, "evaluation_step": 1, "early_stopping_step": 50,
    "top_k": "[5, 20]", "epochs": 1000, "real_negative_sampling_probabilities": 1.5,
    "p": 1.5, "q": 0.75, "r": 100, "s": 5, "t": 50, "path_name": "nothing",
}
# ReFINe++'s results4comparison header: no p, q, r, s, t; dataset_augment is a word
PLUS_HEADER = {
    "ramdom_seed": 2024, "gpu_id": 2, "dataset": "ML-100K", "dataset_augment": "augment",
    "batch_size": 1024, "test_batch_size": 8192, "embedding_dim": 64, "layers": 4,
    "learning_rate": 0.001, "evaluation_step": 1, "early_stopping_step": 50,
    "top_k": "[5, 20]", "epochs": 1000, "real_negative_sampling_probabilities": 1.5,
    "path_name": "nothing",
}

EPOCHS = [
    (1, 0.6857, {5: (0.0674, 0.0912, 0.0950), 20: (0.0527, 0.2170, 0.1377)}),
    (2, 0.6138, {5: (0.0700, 0.0950, 0.0990), 20: (0.0600, 0.2500, 0.1500)}),
    (3, 0.5172, {5: (0.0647, 0.0860, 0.0922), 20: (0.0518, 0.2146, 0.1360)}),
]
FINAL = {5: (0.2819, 0.1914, 0.3322), 20: (0.2000, 0.4000, 0.3000)}


@pytest.fixture
def refine_log(tmp_path):
    return write_log(tmp_path / "refine.out", REFINE_HEADER, EPOCHS, saved={1, 2},
                     best_epoch=2, seconds=12.5, final=FINAL)


def test_parse_synthetic_refine_log(refine_log):
    run = compare.parse_log(refine_log)
    assert run.header["dataset"] == "ML-100K" and run.header["t"] == "50"
    assert run.header["path_name"] == "nothing" and "user" not in run.header
    assert run.top_k == [5, 20]
    assert [(e.epoch, e.loss) for e in run.epochs] == [(1, 0.6857), (2, 0.6138), (3, 0.5172)]
    assert run.epochs[0].metrics == EPOCHS[0][2]
    assert [e.saved for e in run.epochs] == [True, True, False]
    assert run.best_epoch == 2
    assert run.best_valid == EPOCHS[1][2]
    assert run.final_test == FINAL
    assert run.training_seconds == 12.5


def test_parse_synthetic_refine_plus_log(tmp_path):
    epochs = [(1, 5.0, {5: (0.0694, 0.0945, 0.0943), 20: (0.0484, 0.2098, 0.1310)}),
              (2, 4.4363, {5: (0.0656, 0.0905, 0.0908), 20: (0.0486, 0.2097, 0.1304)})]
    final = {5: (0.2979, 0.2049, 0.3468), 20: (0.1907, 0.4420, 0.3783)}
    path = write_log(tmp_path / "ML-100K.log", PLUS_HEADER, epochs, saved={1}, best_epoch=1,
                     seconds=469.91653847694397, final=final)
    run = compare.parse_log(path)
    assert run.header["dataset_augment"] == "augment" and "p" not in run.header
    assert [e.loss for e in run.epochs] == [5.0, 4.4363]
    assert run.best_epoch == 1 and run.best_valid == epochs[0][2]
    assert run.final_test[20] == (0.1907, 0.4420, 0.3783)
    assert run.training_seconds == pytest.approx(469.9165)


def test_parse_our_log_without_early_stop(tmp_path):
    """main.py's extras: more header keys, stray lines, a no-early-stop notice, a re-logged epoch."""
    resumed = EPOCHS + [(3, 0.5000, {5: (0.0600, 0.0800, 0.0900), 20: (0.0500, 0.2000, 0.1300)})]
    path = write_log(
        tmp_path / "ours.log", REFINE_HEADER, resumed, saved={1, 2}, best_epoch=2, seconds=3.25,
        final=FINAL, best_block=False,
        extra_header=["data_dir: dataset", "device: cpu", "model: refine"],
        before_final=["UserWarning: something", "No early stop within 3 epochs; testing the best "
                      "checkpoint (epoch 2)."],
    )
    run = compare.parse_log(path)
    assert run.header["device"] == "cpu" and run.header["model"] == "refine"
    assert [e.epoch for e in run.epochs] == [1, 2, 3]
    assert run.epoch(3).loss == 0.5000  # the later report of epoch 3 wins
    assert run.best_epoch == 2
    assert run.best_valid == EPOCHS[1][2]  # taken from the epoch-2 lines
    assert run.final_test == FINAL and run.training_seconds == 3.25


def test_best_epoch_falls_back_to_last_save(tmp_path):
    path = write_log(tmp_path / "partial.out", REFINE_HEADER, EPOCHS, saved={1, 2})
    run = compare.parse_log(path)
    assert run.best_epoch == 2 and run.final_test is None and run.training_seconds is None


def test_parse_top_k_upstream_list_quirk():
    assert compare.parse_top_k("[5, 10, 15, 20]") == [5, 10, 15, 20]
    # upstream's `type=list` turns `--top_k 20` into ['2', '0']
    assert compare.parse_top_k("['2', '0']") == [20]


# Expected values read off the tails of the published logs (best epoch = "Early stopping at
# epoch E", epochs = last "Epoch:" line; final test @20 as (precision, recall, ndcg)).
REFERENCE_LOGS = [
    ("ReFINe_ML-100K.out", "ML-100K", 421, 471, (0.1834, 0.4296, 0.3661), 183.9344985485077,
     (0.0905, 0.4219, 0.2670)),
    ("ReFINe_ML-100K.published-code-on-cpu.out", "ML-100K", 366, 416, (0.1820, 0.4225, 0.3606),
     2917.7535989284515, (0.0912, 0.4196, 0.2649)),
    ("ReFINe_ML-1M.out", "ML-1M", 352, 402, (0.2074, 0.3053, 0.3196), 3493.1809120178223,
     (0.1021, 0.3030, 0.2220)),
    ("ReFINe_Netflix-1M.out", "Netflix-1M", 466, 516, (0.1828, 0.2404, 0.2697), 3559.3490121364594,
     (0.0937, 0.2398, 0.1804)),
]


@pytest.mark.parametrize("name,dataset,best,n_epochs,test20,seconds,valid20", REFERENCE_LOGS)
def test_parse_published_logs(published_log, name, dataset, best, n_epochs, test20, seconds, valid20):
    path = ORACLE_DIR / name if "published-code-on-cpu" in name else published_log(name)
    run = compare.parse_log(path)
    assert run.header["dataset"] == dataset and run.top_k == [5, 10, 15, 20]
    assert [e.epoch for e in run.epochs] == list(range(1, n_epochs + 1))
    assert run.best_epoch == best
    assert run.final_test[20] == test20
    assert run.best_valid[20] == valid20
    # the Best Validation block repeats the best epoch's lines, and it was the last one saved
    assert run.best_valid == run.epoch(best).metrics
    assert [e.epoch for e in run.epochs if e.saved][-1] == best
    assert run.training_seconds == seconds
    assert all(set(e.metrics) == {5, 10, 15, 20} for e in run.epochs)


def test_published_ml100k_first_epoch(published_log):
    path = published_log("ReFINe_ML-100K.out")
    first = compare.parse_log(path).epochs[0]
    assert first.loss == 0.6857
    assert first.metrics[5] == (0.0674, 0.0912, 0.0950)
    assert first.metrics[20] == (0.0527, 0.2170, 0.1377)


@pytest.fixture
def two_runs(tmp_path, refine_log):
    # B differs from the reference at k=20 by -0.0100, +0.0100, +0.0300 (P, R, NDCG)
    final_b = {5: (0.2819, 0.1914, 0.3322), 20: (0.1900, 0.4100, 0.3300)}
    other = write_log(tmp_path / "other.out", REFINE_HEADER, EPOCHS[:2], saved={1}, best_epoch=1,
                      seconds=99.6, final=final_b)
    return refine_log, other


def test_compare_rows_differences(two_runs):
    runs = [compare.parse_log(p) for p in two_runs]
    ref, other = compare.compare_rows(runs, ["ref", "B"], 20)
    assert (ref["Precision"], ref["Recall"], ref["NDCG"]) == (0.2000, 0.4000, 0.3000)
    assert ref["Recall_abs"] is None and ref["Recall_rel"] is None
    assert (other["best_epoch"], other["epochs"], other["seconds"]) == (1, 2, 99.6)
    # by hand: 0.19 - 0.20 = -0.01 (-5%); 0.41 - 0.40 = +0.01 (+2.5%); 0.33 - 0.30 = +0.03 (+10%)
    assert other["Precision_abs"] == pytest.approx(-0.01, abs=1e-12)
    assert other["Precision_rel"] == pytest.approx(-0.05)
    assert other["Recall_abs"] == pytest.approx(0.01, abs=1e-12)
    assert other["Recall_rel"] == pytest.approx(0.025)
    assert other["NDCG_abs"] == pytest.approx(0.03, abs=1e-12)
    assert other["NDCG_rel"] == pytest.approx(0.10)


def test_cli_markdown_table(two_runs, capsys):
    assert compare.main([str(p) for p in two_runs] + ["--labels", "ref", "B", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "| run | best epoch | epochs | Precision@20 | Recall@20 | NDCG@20 | train s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| ref | 2 | 3 | 0.2000 | 0.4000 | 0.3000 | 12 |",
        "| B | 1 | 2 | 0.1900 (-0.0100, -5.00%) | 0.4100 (+0.0100, +2.50%) | 0.3300 (+0.0300, +10.00%) | 100 |",
    ]


def test_cli_text_table_other_k(two_runs, capsys):
    assert compare.main([str(p) for p in two_runs] + ["--k", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["run", "best", "epoch", "epochs", "Precision@5", "Recall@5",
                              "NDCG@5", "train", "s"]
    assert out[2].split() == ["refine", "2", "3", "0.2819", "0.1914", "0.3322", "12"]
    # identical @5 results: zero differences
    assert "0.1914 (+0.0000, +0.00%)" in out[3]


def test_cli_unfinished_run_shows_dash(tmp_path, refine_log, capsys):
    partial = write_log(tmp_path / "partial.out", REFINE_HEADER, EPOCHS, saved={1, 2})
    assert compare.main([str(refine_log), str(partial), "--labels", "ref", "running"]) == 0
    captured = capsys.readouterr()
    row = captured.out.splitlines()[3].split()
    assert row == ["running", "2", "3", "-", "-", "-", "-"]
    assert "note: running" in captured.err and "no Final Test Results" in captured.err


@pytest.mark.parametrize("make_args,fragment", [
    (lambda tmp, log: [str(tmp / "missing.out")], "missing.out: log file not found"),
    (lambda tmp, log: [str(log), str(tmp / "data.csv")], "data.csv: not a training log"),
    (lambda tmp, log: [str(log), "--k", "50"], "k=50 not reported"),
    (lambda tmp, log: [str(log), "--labels", "a", "b"], "--labels has 2 names for 1 logs"),
    (lambda tmp, log: [str(log), str(tmp / "data.csv"), "--labels", "a", "a"],
     "--labels a: given to more than one log; give each log its own label"),
    (lambda tmp, log: [str(log), str(log)], "refine.out: the same log given twice; give it once"),
    (lambda tmp, log: [str(log), "--plot", str(tmp / "x.pdf")], "must end in .png"),
    (lambda tmp, log: [str(log), "--plot", str(tmp / "data.csv" / "x.png")], "data.csv is a file, not a folder"),
    (lambda tmp, log: [str(log), "--plot", str(tmp / "folder.png")], "folder.png is a directory"),
])
def test_cli_errors(tmp_path, refine_log, capsys, make_args, fragment):
    (tmp_path / "data.csv").write_text("user,item\n1,2\n")
    (tmp_path / "folder.png").mkdir()
    before = sorted(tmp_path.rglob("*"))
    assert compare.main(make_args(tmp_path, refine_log)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_ctrl_c_while_plotting_is_one_line_and_writes_nothing(two_runs, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "plot_curves", interrupted)
    assert compare.main([str(p) for p in two_runs] + ["--plot", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: interrupted") and err.count("\n") == 1
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*"))


def test_cli_subprocess_plot_under_a_file(two_runs, tmp_path):
    """The real entry point: one error line, exit code 2, no traceback."""
    import subprocess
    import sys

    from helpers import ROOT

    blocker = tmp_path / "result"
    blocker.write_text("a file where a folder is expected")
    process = subprocess.run([sys.executable, str(ROOT / "compare.py"), *map(str, two_runs),
                              "--plot", str(blocker / "ML-100K" / "c.png")], capture_output=True, text=True)
    assert process.returncode == 2
    assert process.stderr == f"error: --plot {blocker / 'ML-100K' / 'c.png'}: {blocker} is a file, not a folder; " \
                             f"move it away or write elsewhere\n"


def test_parse_log_raises_input_error_for_non_log(tmp_path):
    path = tmp_path / "empty.out"
    path.write_text(RULE + "\nramdom_seed: 2024\n" + RULE + "\n")
    with pytest.raises(InputError, match="no 'Epoch: N, Loss: X' lines"):
        compare.parse_log(path)


def test_plot_png_and_series(two_runs, tmp_path):
    runs = [compare.parse_log(p) for p in two_runs]
    out = tmp_path / "curves.png"
    figure, series = compare.plot_curves(runs, ["ref", "B"], 20, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(out).shape[:2]
    assert (width, height) == (round(13 * 90), round(3.8 * 90))

    assert list(series) == ["valid Recall@20", "valid NDCG@20", "training loss"]
    assert series["valid Recall@20"]["ref"] == ([1, 2, 3], [0.2170, 0.2500, 0.2146])
    assert series["valid NDCG@20"]["B"] == ([1, 2], [0.1377, 0.1500])
    assert series["training loss"]["B"] == ([1, 2], [0.6857, 0.6138])
    for ax, quantity in zip(figure.axes, series):
        assert ax.get_title() == quantity
        curves = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert [line.get_label() for line in curves] == ["ref", "B"]
        assert [len(line.get_xdata()) for line in curves] == [3, 2]
    # best epochs of ref (2) and B (1) drawn as dotted vertical lines
    verticals = [line.get_xdata()[0] for line in figure.axes[0].get_lines()
                 if line.get_linestyle() == ":"]
    assert verticals == [2, 1]


def test_cli_writes_plot(two_runs, tmp_path, capsys):
    out = tmp_path / "sub" / "cmp.png"
    assert compare.main([str(p) for p in two_runs] + ["--plot", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {out}" in capsys.readouterr().err


def test_cli_subprocess_one_label_for_two_logs(two_runs):
    """Two logs under one --labels name would draw one curve over the other: one line, exit 2."""
    import subprocess
    import sys

    from helpers import ROOT

    process = subprocess.run([sys.executable, str(ROOT / "compare.py"), *map(str, two_runs), "--labels", "x", "x"],
                             capture_output=True, text=True)
    assert (process.returncode, process.stdout) == (2, "")
    assert process.stderr == "error: --labels x: given to more than one log; give each log its own label\n"
