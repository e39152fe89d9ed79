"""experiments.py, sweep.py, report.py: the aggregation against independent computations, and real sweeps on synthetic data."""
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import experiments
import report
import sweep
from conftest import ROOT, write_synthetic_dataset

TINY = ["--batch_size", "64", "--top_k", "5", "20", "--r", "5", "--s", "2", "--t", "2",
        "--embedding_dim", "8", "--layers", "1", "--learning_rate", "0.01"]


# ----------------------------------------------------------------------------------------------
# Aggregation on made-up runs


def write_fake_run(out, config, seed, test, per_user, curve=((1, 0.1), (2, 0.2))):
    """A finished run folder as main.py leaves it: test JSON, per-user CSV, the log's epoch blocks."""
    folder = out / config / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "run.test.json").write_text(json.dumps({
        "best_epoch": seed % 7 + 1, "eval_protocol": "faithful", "train_seconds": 10.0 + seed % 3,
        "test": {"20": dict(zip(sweep.METRICS, test))}}))
    lines = ["user_id,precision@20,recall@20,ndcg@20"] + [f"{user},{p!r},{r!r},{n!r}" for user, (p, r, n) in per_user.items()]
    (folder / "run.test_users.csv").write_text("\n".join(lines) + "\n")
    (folder / "run.out").write_text("".join(
        f"\nEpoch: {epoch:03d}, Loss: 0.5000\nPrecision@20: 0.0000, Recall@20: {recall:.4f}, NDCG@20: 0.0000\nSave: x\n"
        for epoch, recall in curve))


def exact_wilcoxon_p(differences):
    """Two-sided exact p of the signed-rank test: all 2^n sign patterns of the ranks of |d|."""
    ranks = np.argsort(np.argsort(np.abs(differences))) + 1  # no ties in the data used here
    r_plus = ranks[differences > 0].sum()
    observed = min(r_plus, ranks.sum() - r_plus)
    sums = [sum(r for r, sign in zip(ranks, signs) if sign) for signs in itertools.product([0, 1], repeat=len(ranks))]
    return min(1.0, 2 * np.mean([value <= observed for value in sums]))


@pytest.fixture
def fake_sweep(tmp_path):
    """Two configs x 3 seeds; 8 users with made-up per-user recall, no ties in the differences."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "experiments.json").write_text(json.dumps({"dataset": "TOY", "configs": [
        {"name": "base", "flags": ["--model", "lightgcn"]}, {"name": "new", "flags": []}]}))
    rng = np.random.default_rng(5)
    values = {}
    for config, shift in (("base", 0.0), ("new", 0.03)):
        for seed in (2024, 2025, 2026):
            test = (0.15 + shift / 3 + rng.uniform(0, 0.01), 0.40 + shift + rng.uniform(0, 0.02),
                    0.35 + shift + rng.uniform(0, 0.02))
            per_user = {user: (rng.uniform(0, 0.3), rng.uniform(0, 1) + shift, rng.uniform(0, 1))
                        for user in range(101, 109)}
            values[config, seed] = (test, per_user)
            write_fake_run(out, config, seed, test, per_user)
    return out, values


def test_aggregation_against_independent_computation(fake_sweep):
    out, values = fake_sweep
    summary = report.summarize(out)
    assert summary["baseline"] == "base" and summary["k"] == 20 and summary["dataset"] == "TOY"
    base, new = summary["configs"]
    seeds = (2024, 2025, 2026)
    t_975_df2 = 4.302652729911275  # Student t table: 97.5% quantile, 2 degrees of freedom
    for entry, config in ((base, "base"), (new, "new")):
        assert entry["seeds"] == 3 and [run["seed"] for run in entry["runs"]] == list(seeds)
        for index, metric in enumerate(sweep.METRICS):
            x = np.array([values[config, seed][0][index] for seed in seeds])
            mean, std = x.sum() / 3, math.sqrt(((x - x.sum() / 3) ** 2).sum() / 2)
            assert entry["mean"][metric] == pytest.approx(mean, rel=1e-12)
            assert entry["std"][metric] == pytest.approx(std, rel=1e-12)
            half = t_975_df2 * std / math.sqrt(3)
            assert entry["ci95"][metric] == pytest.approx([mean - half, mean + half], rel=1e-9)
        assert entry["runs"][0]["log"] == f"{config}/seed2024/run.out"
    assert base["vs_baseline"] is None
    recall_new = np.array([values["new", seed][0][1] for seed in seeds])
    recall_base = np.array([values["base", seed][0][1] for seed in seeds])
    assert new["vs_baseline"]["recall_rel_diff"] == pytest.approx(recall_new.mean() / recall_base.mean() - 1)
    # Paired t-test, df = 2: t = mean(d) / (sd(d) / sqrt(3)); two-sided p = 1 - |t| / sqrt(2 + t^2).
    d = recall_new - recall_base
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert new["vs_baseline"]["p_seed_ttest"] == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), rel=1e-9)
    # Wilcoxon over the 8 users, each user's recall averaged over the 3 seeds.
    users = range(101, 109)
    mean_new = np.array([np.mean([values["new", s][1][u][1] for s in seeds]) for u in users])
    mean_base = np.array([np.mean([values["base", s][1][u][1] for s in seeds]) for u in users])
    assert new["vs_baseline"]["p_user_wilcoxon"] == pytest.approx(exact_wilcoxon_p(mean_new - mean_base), rel=1e-9)


def test_validation_curves_come_from_the_logs(fake_sweep):
    out, _ = fake_sweep
    _, configs = report.collect(out, 20)
    assert [run.curve for _, _, runs in configs for run in runs] == [[(1, 0.1), (2, 0.2)]] * 6


def test_report_files_and_baseline_choice(fake_sweep, capsys):
    out, _ = fake_sweep
    assert experiments.main(["--report", str(out), "--baseline", "new"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == "new" and summary["configs"][1]["vs_baseline"] is None
    assert (out / "summary.md").read_text() in printed + "\n"
    assert "| base | 3 |" in printed and "## Against new" in printed
    tex = (out / "summary.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and "base" in tex
    for image in ("curves.png", "bars.png"):
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert experiments.main(["--report", str(out), "--baseline", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: --baseline nope")


def test_unfinished_runs_do_not_count(fake_sweep):
    out, _ = fake_sweep
    (out / "new/seed2026/run.test.json").unlink()
    (out / "new/seed2026/run.last.pt").write_bytes(b"")
    new = report.summarize(out)["configs"][1]
    assert new["seeds"] == 2 and [run["seed"] for run in new["runs"]] == [2024, 2025]


@pytest.mark.parametrize("values,expected", [([3], [2024, 2025, 2026]), ([2024, 7, 9], [2024, 7, 9]), ([7, 7], [7])])
def test_seeds(values, expected):
    assert experiments.resolve_seeds(values) == expected


def test_configs_preset_pick_and_custom():
    args = experiments.parse_args(["--dataset", "X", "--out", "o", "--configs", "refine", "lightgcn-original",
                                   "--config", 'tuned=--p 2 --q "0.5"']).args
    assert experiments.resolve_configs(args) == [("refine", []), ("lightgcn-original", ["--model", "lightgcn",
                                                 "--dataset_augment", "0"]), ("tuned", ["--p", "2", "--q", "0.5"])]
    paper = experiments.resolve_configs(experiments.parse_args(["--dataset", "X", "--out", "o"]).args)
    assert [name for name, _ in paper] == ["lightgcn-original", "lightgcn-augment", "refine-no-similarity",
                                           "refine", "refine_plus"]


def test_help_explains_every_flag_with_its_default():
    parser = experiments.build_parser()
    formatter = parser.formatter_class(parser.prog)
    for action in parser._actions:
        if action.dest != "help":
            text = formatter._get_help_string(action)
            assert action.help and ("default" in text or "required" in text), action.dest
    assert "examples:" in parser.format_help() and "outputs:" in parser.format_help()


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "X", "--out", "o", "--", "--random_seed", "3"], "--random_seed after --"),
    (["--dataset", "X"], "--dataset and --out are required"),
    (["--dataset", "X", "--out", "o", "--jobs", "0"], "--jobs"),
])
def test_bad_command_lines(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        experiments.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_config_rerun_with_other_flags_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    sweep.update_manifest(out, "TOY", [("refine", ["--dataset", "TOY", "--p", "2"])])
    code = experiments.main(["--dataset", "TOY", "--configs", "refine", "--out", str(out), "--seeds", "1"])
    assert code == 2 and "config refine ran with flags" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Real sweeps: main.py runs on a synthetic dataset


@pytest.fixture
def toy_data(tmp_path):
    write_synthetic_dataset(tmp_path / "data", "TOY", num_users=30, num_items=40)
    return tmp_path / "data"


def sweep_command(data_dir, out, *extra, epochs=2, configs=("refine", "lightgcn-augment"), executor="local"):
    return ([sys.executable, str(ROOT / "experiments.py"), "--dataset", "TOY", "--configs", *configs,
             "--seeds", "2", "--jobs", "2", "--out", str(out), "--executor", executor, "--devices", "cpu", *extra,
             "--", "--data_dir", str(data_dir), "--epochs", str(epochs)] + TINY)


def run_sweep(command, cwd):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_local_pool_spreads_runs_over_the_gpus(tmp_path, monkeypatch):
    """--jobs 4 on two GPUs: two runs at a time on each, torch threads split between the jobs (fake
    children that wait until all four started, so no CUDA is needed)."""
    import threading
    started, all_started = [], threading.Barrier(4, timeout=30)

    class Child:
        def wait(self):
            all_started.wait()
            return 0

    def fake_start(command, env, folder, cwd=None):
        started.append((command[command.index("--device") + 1], env["OMP_NUM_THREADS"]))
        return Child()

    monkeypatch.setattr(sweep, "start_run", fake_start)
    monkeypatch.setattr(sweep, "available_cores", lambda: 8)
    runs = [sweep.Run("refine", seed, tmp_path / f"seed{seed}", ["--dataset", "TOY"]) for seed in range(4)]

    class Progress:
        def started(self, run):
            pass

        def finished(self, run, returncode):
            assert returncode == 0

    sweep.execute_local(runs, ["cuda:0", "cuda:1"], 4, Progress())
    assert sorted(started) == [("cuda:0", "2"), ("cuda:0", "2"), ("cuda:1", "2"), ("cuda:1", "2")]


def test_sweep_runs_each_run_once_and_reports_the_same(toy_data, tmp_path):
    out = tmp_path / "out"
    first = run_sweep(sweep_command(toy_data, out), tmp_path)
    assert first.returncode == 0, first.stderr
    assert "4 runs (2 configs x 2 seeds): 0 finished, 0 to resume, 4 to start" in first.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [(entry["name"], entry["seeds"]) for entry in summary["configs"]] == [("refine", 2), ("lightgcn-augment", 2)]
    for entry in summary["configs"]:
        for run in entry["runs"]:
            folder = out / entry["name"] / f"seed{run['seed']}"
            log = (folder / "run.out").read_text()
            assert log.count("\nEpoch: ") == 2 and "Final Test Results" in log
            assert f"ramdom_seed: {run['seed']}" in log
            assert run["test"]["recall"] == json.loads((folder / "run.test.json").read_text())["test"]["20"]["recall"]
            assert json.loads((folder / "run.json").read_text())["threads"] == max(1, sweep.available_cores() // 2)
    # Different seeds give different runs.
    refine_runs = summary["configs"][0]["runs"]
    assert (out / "refine/seed2024/run.out").read_text() != (out / "refine/seed2025/run.out").read_text()
    assert refine_runs[0]["log"] == "refine/seed2024/run.out"
    started = {path: path.read_text() for path in out.glob("*/seed*/run.json")}

    second = run_sweep(sweep_command(toy_data, out), tmp_path)
    assert second.returncode == 0, second.stderr
    assert "4 runs (2 configs x 2 seeds): 4 finished, 0 to resume, 0 to start" in second.stderr
    assert {path: path.read_text() for path in out.glob("*/seed*/run.json")} == started  # nothing ran again
    assert json.loads((out / "summary.json").read_text()) == summary
    assert second.stdout == first.stdout  # the same table


@pytest.mark.parametrize("stop", ["kill the run", "stop the sweep"])
def test_interrupted_sweep_completes_on_rerun(toy_data, tmp_path, stop):
    """A run killed with -9 is reported as failed; a sweep stopped by SIGTERM (as by Ctrl-C) stops its
    runs cleanly. Either way the rerun resumes the run from its last finished epoch and completes it."""
    out = tmp_path / "out"
    command = sweep_command(toy_data, out, "--jobs", "1", epochs=40, configs=("refine",))
    command[command.index("--seeds") + 1] = "1"
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = out / "refine/seed2024/run.last.pt"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline:
        time.sleep(0.05)
    if stop == "kill the run":
        pgrep = subprocess.run(["pgrep", "-f", "refine/seed2024 --device cpu"], capture_output=True, text=True)
        os.kill(int(pgrep.stdout.split()[0]), signal.SIGKILL)
    else:
        sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=300)
    if stop == "kill the run":
        assert sweep.returncode == 1 and "failed: refine seed 2024 (exit code -9)" in err
    else:
        assert sweep.returncode == 2 and "error: interrupted: 0 of 1 runs finished; rerun the same command" in err
        assert "stopped: refine seed 2024: error: interrupted during epoch" in err and "failed:" not in err
    assert not (out / "refine/seed2024/run.test.json").exists()
    saved_epochs = len((out / "refine/seed2024/run.metrics.jsonl").read_text().splitlines())

    rerun = run_sweep(command, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 to resume" in rerun.stderr
    assert json.loads((out / "refine/seed2024/run.json").read_text())["resumed"] is True
    log = (out / "refine/seed2024/run.out").read_text()
    assert saved_epochs >= 1 and log.count("\nEpoch: ") == 40  # every epoch, the early ones from the saved state
    assert "Final Test Results" in log


def test_failing_config_is_reported_and_the_others_finish(toy_data, tmp_path):
    out = tmp_path / "out"
    command = sweep_command(toy_data, out, "--config", "broken=--learning_rate fast", configs=("refine",))
    result = run_sweep(command, tmp_path)
    assert result.returncode == 1
    assert "failed: broken seed 2024 (exit code 2): error: argument --learning_rate: invalid float value: 'fast'" \
        in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [(entry["name"], entry["seeds"]) for entry in summary["configs"]] == [("refine", 2), ("broken", 0)]


def test_ray_executor_gives_the_local_results(toy_data, tmp_path):
    pytest.importorskip("ray")
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert run_sweep(sweep_command(toy_data, local), tmp_path).returncode == 0
    result = run_sweep(sweep_command(toy_data, remote, executor="ray"), tmp_path)
    assert result.returncode == 0, result.stderr
    mine, theirs = (json.loads((folder / "summary.json").read_text()) for folder in (local, remote))
    for a, b in zip(mine["configs"], theirs["configs"]):
        assert [run["test"] for run in a["runs"]] == [run["test"] for run in b["runs"]]
        assert [run["best_epoch"] for run in a["runs"]] == [run["best_epoch"] for run in b["runs"]]
    for path in local.glob("*/seed*/run.test_users.csv"):
        assert path.read_text() == (remote / path.relative_to(local)).read_text()
