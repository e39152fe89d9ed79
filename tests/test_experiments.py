"""experiments.py, sweep.py, report.py: the aggregation against independent computations, and real sweeps on synthetic data."""
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

import compare
import experiments
import report
import run_files
import sweep
import utils
from helpers import ROOT, TINY, write_synthetic_dataset


# ----------------------------------------------------------------------------------------------
# Aggregation on made-up runs


def write_fake_run(out, config, seed, test, per_user, curve=((1, 0.1), (2, 0.2))):
    """A finished run folder as main.py leaves it: test JSON, per-user CSV, the log's epoch blocks."""
    folder = out / config / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "run.test.json").write_text(json.dumps({
        "best_epoch": seed % 7 + 1, "eval_protocol": "faithful", "train_seconds": 10.0 + seed % 3,
        "test": {"20": dict(zip(utils.METRICS, test))}}))
    lines = ["user_id,precision@20,recall@20,ndcg@20"] + [f"{user},{p!r},{r!r},{n!r}" for user, (p, r, n) in per_user.items()]
    (folder / "run.test_users.csv").write_text("\n".join(lines) + "\n")
    (folder / "run.out").write_text("".join(
        f"\nEpoch: {epoch:03d}, Loss: 0.5000\nPrecision@20: 0.0000, Recall@20: {recall:.4f}, NDCG@20: 0.0000\nSave: x\n"
        for epoch, recall in curve))


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
        for index, metric in enumerate(utils.METRICS):
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
    versus = new["vs_baseline"]
    assert versus["recall_rel_diff"] == pytest.approx(recall_new.mean() / recall_base.mean() - 1)
    assert versus["seeds"] == versus["baseline_seeds"] == 3 and set(versus["by_metric"]) == {"recall", "ndcg"}
    recall = versus["by_metric"]["recall"]
    # Welch's t-test, by hand: se^2 = s1^2/3 + s2^2/3, Welch-Satterthwaite degrees of freedom.
    v1, v2 = recall_new.var(ddof=1) / 3, recall_base.var(ddof=1) / 3
    diff, se, df = recall_new.mean() - recall_base.mean(), math.sqrt(v1 + v2), (v1 + v2) ** 2 / (v1 ** 2 / 2 + v2 ** 2 / 2)
    assert recall["test"] == "welch" and recall["diff"] == pytest.approx(diff, rel=1e-12)
    assert recall["p"] == pytest.approx(2 * stats.t.sf(abs(diff) / se, df), rel=1e-9)
    half = stats.t.ppf(0.975, df) * se
    assert recall["ci95_rel_diff"] == pytest.approx([(diff - half) / recall_base.mean(),
                                                    (diff + half) / recall_base.mean()], rel=1e-9)
    # Holm over the report's two comparisons (recall and NDCG of "new"): the smaller p doubled.
    p_values = sorted(m["p"] for m in versus["by_metric"].values())
    assert min(m["p_holm"] for m in versus["by_metric"].values()) == pytest.approx(min(1, 2 * p_values[0]))
    assert recall["verdict"] in ("better", "worse", "equivalent", "inconclusive")
    # The users' interval: over the 8 users of each run; it holds the point estimate.
    low, high = recall["ci95_rel_diff_hier"]
    assert low < recall["rel_diff"] < high


def assert_same_to_rounding(actual, expected, path="summary"):
    """The same structure, keys, strings and integers, and floats equal to 1e-12 relative: numpy's
    sums take other SIMD paths on other x86 CPUs, which moves the bootstrap's last digits (seen: 1e-15)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), path
        for key in expected:
            assert_same_to_rounding(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for index, (item, wanted) in enumerate(zip(actual, expected)):
            assert_same_to_rounding(item, wanted, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-12, abs=1e-15, nan_ok=True), path
    else:
        assert actual == expected and type(actual) is type(expected), path


COMMITTED_SWEEPS = sorted(path.parent for path in (ROOT / "results4comparison").glob("*/summary.json"))


@pytest.mark.parametrize("folder", COMMITTED_SWEEPS, ids=lambda path: path.name)
def test_committed_sweeps_summaries_equal_what_their_runs_say(folder):
    """The committed summary.json is what the report makes of the committed runs, and each run's test
    metrics are those its log printed."""
    committed = json.loads((folder / "summary.json").read_text())
    published = committed.pop("published", [])  # the published logs are fetched, not committed
    assert_same_to_rounding(report.summarize(folder, committed["baselines"], committed["k"], margin=committed["margin"],
                                             paired=committed["paired_because"]), committed)
    for item in published:  # each published run's prediction interval is its config's
        entry = next(entry for entry in committed["configs"] if entry["name"] == item["config"])
        assert item["pi95"] == entry["pi95"]
    for entry in committed["configs"]:
        for run in entry["runs"]:
            printed = compare.parse_log(folder / run["log"]).final_test[committed["k"]]
            assert printed == tuple(float(f"{run['test'][metric]:.4f}") for metric in utils.METRICS), run["log"]


def test_validation_curves_come_from_the_logs(fake_sweep):
    out, _ = fake_sweep
    configs = report.collect(out, 20).configs
    assert [run.curve for _, _, runs in configs for run in runs] == [[(1, 0.1), (2, 0.2)]] * 6


def test_report_files_and_baseline_choice(fake_sweep, capsys):
    out, _ = fake_sweep
    assert experiments.main(["--report", str(out), "--baseline", "new"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == "new" and summary["configs"][1]["vs_baseline"] is None
    assert (out / "summary.md").read_text() in printed + "\n"
    assert "| base | 3† |" in printed and "## Against new" in printed
    tex = (out / "summary.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and "base" in tex
    for image in ("curves.png", "bars.png"):
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert experiments.main(["--report", str(out), "--baseline", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: --baseline nope")


def test_a_baseline_without_finished_runs_says_so_under_its_table(fake_sweep):
    """Its runs all failed: the test table is empty, and the note under it says why."""
    out, _ = fake_sweep
    import shutil

    shutil.rmtree(out / "base")
    done = subprocess.run([sys.executable, str(ROOT / "experiments.py"), "--report", str(out), "--baseline", "base"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    note = "No finished run of base: nothing is tested against it"
    assert note in done.stdout.split("## Against base")[1]
    assert note in (out / "summary.md").read_text() and note in (out / "summary.tex").read_text()


@pytest.mark.parametrize("finished,line", [
    (6, "error: interrupted after all 6 runs had finished (the report of those is in {out}); nothing is left to run"),
    (2, "error: interrupted: 2 of 6 runs finished (the report of those is in {out}); rerun the same command to "
        "continue the others from their last finished epoch"),
])
def test_a_stop_says_truly_what_finished_and_reports_it(fake_sweep, monkeypatch, capsys, finished, line):
    """Runs that finished while the stop went round are counted as finished, and reported."""
    out, _ = fake_sweep

    def stopped(*args):
        raise sweep.Stopped(finished, 6)

    monkeypatch.setattr(sweep, "sweep", stopped)
    assert experiments.main(["--dataset", "TOY", "--out", str(out), "--configs", "refine"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == line.format(out=out)
    assert (out / "summary.md").read_text() in captured.out + "\n"


def test_one_baseline_per_model(fake_sweep, capsys):
    """Each config is tested against the baseline trained with its own --model: the same numbers as a
    report against that baseline alone."""
    out, values = fake_sweep
    manifest = json.loads((out / "experiments.json").read_text())
    manifest["configs"].append({"name": "base-copy", "flags": ["--model", "lightgcn", "--r", "5"]})
    manifest["configs"].append({"name": "new-copy", "flags": ["--t", "3"]})  # the default --model: refine
    (out / "experiments.json").write_text(json.dumps(manifest))
    for copy, config in (("base-copy", "base"), ("new-copy", "new")):
        for seed in (2024, 2025, 2026):
            test, per_user = values[config, seed]
            write_fake_run(out, copy, seed, [value * 1.01 for value in test], per_user)
    both = report.summarize(out, ["base", "new"])
    against = {name: report.summarize(out, name) for name in ("base", "new")}
    entries = {entry["name"]: entry for entry in both["configs"]}
    assert both["baselines"] == ["base", "new"] and entries["base"]["vs_baseline"] is None
    assert entries["new"]["vs_baseline"] is None
    for name, baseline in (("base-copy", "base"), ("new-copy", "new")):
        alone = next(entry for entry in against[baseline]["configs"] if entry["name"] == name)
        holm_free = [{metric: {key: value for key, value in m.items() if key not in ("p_holm", "p_tost_holm", "verdict")}
                      for metric, m in versus["vs_baseline"]["by_metric"].items()} for versus in (entries[name], alone)]
        assert holm_free[0] == holm_free[1]  # Holm's family is each report's own: those may differ
        assert entries[name]["vs_baseline"]["baseline"] == baseline
    # One Holm family over the whole two-baseline report: 2 configs x 2 metrics.
    p_values = [m["p"] for entry in both["configs"] if entry["vs_baseline"] for m in entry["vs_baseline"]["by_metric"].values()]
    adjusted = [m["p_holm"] for entry in both["configs"] if entry["vs_baseline"]
                for m in entry["vs_baseline"]["by_metric"].values()]
    assert len(p_values) == 4 and min(adjusted) == pytest.approx(min(1, 4 * min(p_values)))
    assert experiments.main(["--report", str(out), "--baseline", "base", "new"]) == 0
    text = (out / "summary.md").read_text()
    against_base, against_new = text.split("## Against base")[1].split("## Against new")
    assert "| base-copy |" in against_base and "| new-copy |" not in against_base
    assert "| new-copy |" in against_new and "| base-copy |" not in against_new
    capsys.readouterr()
    assert experiments.main(["--report", str(out), "--baseline", "base", "base-copy"]) == 2
    assert capsys.readouterr().err == ("error: --baseline base base-copy: both train --model lightgcn; "
                                       "give one baseline per model\n")


def test_unfinished_runs_do_not_count(fake_sweep):
    out, _ = fake_sweep
    (out / "new/seed2026/run.test.json").unlink()
    (out / "new/seed2026/run.last.pt").write_bytes(b"")
    new = report.summarize(out)["configs"][1]
    assert new["seeds"] == 2 and [run["seed"] for run in new["runs"]] == [2024, 2025]


@pytest.mark.parametrize("values,expected", [
    (["3"], [2024, 2025, 2026]), (["2024", "7", "9"], [2024, 7, 9]), (["7", "7"], [7]), (["100"], list(range(2024, 2124))),
    (["2024,"], [2024]), (["2024,7"], [2024, 7]), (["2024,", "9"], [2024, 9]), (["0,"], [0]),
])
def test_seeds(values, expected):
    assert experiments.resolve_seeds(values) == expected


@pytest.mark.parametrize("values,message", [
    (["2024"], "--seeds 2024: one number is a count of seeds, at most 100; for seed 2024 alone write --seeds 2024, "
               "(several: --seeds 2024 2025)"),
    (["101"], "--seeds 101: one number is a count of seeds, at most 100"),
    (["0"], "--seeds 0: give a number of seeds >= 1, or seeds with a comma (--seeds 0,)"),
    (["x"], "--seeds x: give a number of seeds, or seeds as integers"),
    ([","], "--seeds ,: give a number of seeds"),
    (["-1,"], "--seeds -1,: seed -1 out of range; seeds are integers from 0 to 2**32 - 1"),
    (["1", "4294967296"], "--seeds 1 4294967296: seed 4294967296 out of range"),
])
def test_bad_seeds(values, message):
    with pytest.raises(experiments.InputError) as error:
        experiments.resolve_seeds(values)
    assert str(error.value).startswith(message)


def test_a_seed_given_as_a_count_starts_nothing(tmp_path):
    """`--seeds 2024` would have started 2,024 runs: one line, exit 2, no folder made."""
    out = tmp_path / "out"
    result = run_sweep([sys.executable, str(ROOT / "experiments.py"), "--dataset", "TOY", "--out", str(out),
                        "--seeds", "2024"], tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("error: --seeds 2024: one number is a count of seeds, at most 100; for seed 2024 alone "
                             "write --seeds 2024, (several: --seeds 2024 2025)\n")
    assert not out.exists()


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
    (["--dataset", "X", "--out", "o", "--threads", "0"], "--threads"),
    (["--dataset", "X", "--out", "o", "--gpus_per_run", "nan"], "--gpus_per_run nan: must be a number >= 0"),
    (["--dataset", "X", "--out", "o", "--gpus_per_run", "inf"], "--gpus_per_run inf: must be a number >= 0"),
    (["--dataset", "X", "--out", "o", "--gpus_per_run", "-1"], "--gpus_per_run -1.0: must be a number >= 0"),
])
def test_bad_command_lines(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        experiments.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_ray_missing_is_refused_before_any_run(monkeypatch, capsys):
    monkeypatch.setattr(experiments.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as exit_info:
        experiments.parse_args(["--dataset", "X", "--out", "o", "--executor", "ray"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: --executor ray needs Ray: pip install -r requirements-ray.txt")


@pytest.mark.parametrize("configs,message", [
    (["..=--p 2"], "--config '..=--p 2': write NAME=\"--flag value ...\", NAME of letters, digits, _ . + - (a name, not a path)"),
    (["../x=--p 2"], "--config '../x=--p 2': write NAME="),
    (["a/b=--p 2"], "--config 'a/b=--p 2': write NAME="),
    (["summary.md=--p 2"], "--config summary.md: summary.md is a file of the sweep folder; choose another name"),
    (["a=--p 2", "a=--p 3"], "--config a: given twice; give each config its own name"),
    (["refine_plus=--p 2"], "--config refine_plus: a config of --preset paper has this name (--model refine_plus); "
                            "choose another name"),
    (["refine=--p 2"], "--config refine: a config of --preset paper has this name (no flags); choose another name"),
    (['a=--p "2'], "--config a: cannot split the flags (No closing quotation)"),
])
def test_config_names_are_names(tmp_path, configs, message):
    """Names that are paths, collide with each other or with a preset's: one line, exit 2, nothing written."""
    out = tmp_path / "out"
    argv = ["--dataset", "TOY", "--out", str(out), "--seeds", "1"]
    for spec in configs:
        argv += ["--config", spec]
    result = run_sweep([sys.executable, str(ROOT / "experiments.py"), *argv], tmp_path)
    assert result.returncode == 2 and result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    assert not out.exists() and not (tmp_path / "x").exists()


def test_a_config_rerun_with_other_flags_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    run_files.write_manifest(out, run_files.merged_manifest(out, "TOY", [("refine", ["--dataset", "TOY", "--p", "2"])]))
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


class RecordingProgress:
    """The progress interface, keeping (label, returncode) of each finished run."""

    def __init__(self):
        self.ended = []

    def started(self, run):
        pass

    def finished(self, run, returncode):
        self.ended.append((run.label, returncode))


def test_local_pool_gives_each_run_one_gpu_of_its_own(tmp_path, monkeypatch):
    """--jobs 4 on two GPUs: two runs at a time on each; each child sees only its GPU (the physical id,
    through the driver's own CUDA_VISIBLE_DEVICES) as cuda:0, one torch thread unless a run asks for more;
    run.json names the GPU. Fake children wait until all four started, so no CUDA is needed."""
    import threading
    started, all_started = [], threading.Barrier(4, timeout=30)

    class Child:
        def wait(self):
            all_started.wait()
            return 0

    def fake_start(command, env, folder, cwd=None):
        started.append((command[command.index("--device") + 1], env["CUDA_VISIBLE_DEVICES"], env["OMP_NUM_THREADS"]))
        return Child()

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # the driver's view: cuda:0 is GPU 3, cuda:1 is GPU 5
    monkeypatch.setattr(sweep, "start_run", fake_start)
    monkeypatch.setattr(sweep, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(sweep, "gpu_name", lambda index: f"Fake GPU {index}")
    runs = [sweep.Run("refine", seed, tmp_path / f"seed{seed}", ["--dataset", "TOY"] + (["--threads", "3"] if seed == 3 else []))
            for seed in range(4)]
    progress = RecordingProgress()
    sweep.execute_local(runs, sweep.placements(["cuda:0", "cuda:1"]), 4, progress)
    assert sorted(progress.ended) == [(f"refine seed {seed}", 0) for seed in range(4)]
    assert sorted(started) == [("cuda:0", "3", "1"), ("cuda:0", "3", "1"), ("cuda:0", "5", "1"), ("cuda:0", "5", "3")]
    records = [json.loads((run.folder / "run.json").read_text()) for run in runs]
    assert sorted((r["device"], r["gpu"], r["cuda_visible_devices"]) for r in records) == [
        ("cuda:0", "Fake GPU 0", "3"), ("cuda:0", "Fake GPU 0", "3"), ("cuda:1", "Fake GPU 1", "5"), ("cuda:1", "Fake GPU 1", "5")]
    assert all("--device cuda:0" in " ".join(r["command"]) for r in records)


def test_devices_are_checked_and_mapped(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(sweep, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(sweep, "gpu_name", lambda index: f"GPU {index}")
    assert [(p.device, p.gpu, p.child_device) for p in sweep.placements(["cpu", "cuda", "cuda:1"])] == [
        ("cpu", None, "cpu"), ("cuda:0", "0", "cuda:0"), ("cuda:1", "1", "cuda:0")]
    with pytest.raises(experiments.InputError, match="--devices cuda:2: only 2 CUDA GPU"):
        sweep.placements(["cuda:2"])
    with pytest.raises(experiments.InputError, match="--devices gpu0: not a device"):
        sweep.placements(["gpu0"])
    monkeypatch.setattr(sweep, "cuda_device_count", lambda: 0)
    with pytest.raises(experiments.InputError, match="--devices cuda:0: no CUDA GPU.* use --devices cpu"):
        sweep.placements(["cuda:0"])


def test_default_devices_fall_back_to_the_cpu_with_one_warning(monkeypatch, capsys):
    import devices

    monkeypatch.setattr(sweep, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(devices, "cuda_unusable_warning", lambda: "warning: an NVIDIA GPU is present but ...")
    assert sweep.default_devices() == ["cpu"]
    assert capsys.readouterr().err == "warning: an NVIDIA GPU is present but ...\n"
    monkeypatch.setattr(devices, "cuda_unusable_warning", lambda: None)
    assert sweep.default_devices() == ["cpu"] and capsys.readouterr().err == ""


def test_a_run_that_cannot_start_is_a_failure(tmp_path, monkeypatch):
    """Its run.json cannot be written (a full disk): reported as failed, the other runs go on."""
    import errno

    def full_disk(run, *args):
        if run.seed == 0:
            raise OSError(errno.ENOSPC, "No space left on device", str(run.folder / "run.json"))
        real_record(run, *args)

    class Child:
        def wait(self):
            return 0

    real_record = sweep.write_run_record
    monkeypatch.setattr(sweep, "write_run_record", full_disk)
    monkeypatch.setattr(sweep, "start_run", lambda *args, **kwargs: Child())
    runs = [sweep.Run("refine", seed, tmp_path / f"seed{seed}", ["--dataset", "TOY"]) for seed in range(2)]
    progress = RecordingProgress()
    sweep.execute_local(runs, sweep.placements(["cpu"]), 2, progress)
    assert sorted(progress.ended) == [("refine seed 0", None), ("refine seed 1", 0)]
    assert sweep.last_line(runs[0]) == f"{tmp_path / 'seed0' / 'run.json'}: No space left on device"


@pytest.mark.slow
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
            assert json.loads((folder / "run.json").read_text())["threads"] == 1  # one per run unless asked
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


def process_state(pid):
    """The state letter of a process from /proc (R, S, Z, ...), None once it is gone."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return None
    return stat.rpartition(")")[2].split()[0]


def children_of(pid):
    """Pids whose parent is `pid` (from /proc): the processes that the one we started started itself."""
    children = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{entry}/stat").read().rpartition(")")[2].split()
        except (FileNotFoundError, NotADirectoryError, ProcessLookupError, PermissionError):
            continue
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the driver's children in /proc (Linux)")
@pytest.mark.parametrize("stop", ["kill the run", "stop the sweep", "kill the driver"])
def test_interrupted_sweep_completes_on_rerun(toy_data, tmp_path, stop):
    """A run killed with -9 is reported as failed; a sweep stopped by SIGTERM (as by Ctrl-C) stops its
    runs cleanly; a driver killed with -9 takes its runs with it (they get SIGTERM and save their state),
    so no run goes on alone to be started a second time by the rerun. Every time the rerun resumes the
    run from its last finished epoch and completes it."""
    out = tmp_path / "out"
    command = sweep_command(toy_data, out, "--jobs", "1", epochs=40, configs=("refine",))
    command[command.index("--seeds") + 1] = "1"
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        state, log = out / "refine/seed2024/run.last.pt", out / "refine/seed2024/run.out"
        deadline = time.time() + 300
        # main.py writes an epoch's state, then its log lines: wait for both, or a stop in between finds
        # a state and no log file yet (the rerun is fine; this test reads the log before it).
        while not (state.exists() and log.exists()) and time.time() < deadline:
            time.sleep(0.05)
        (run,) = children_of(driver.pid)  # main.py, started by the driver we started
        if stop == "kill the run":
            os.kill(run, signal.SIGKILL)
        elif stop == "stop the sweep":
            driver.send_signal(signal.SIGTERM)
        else:
            driver.kill()
        _, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:  # the test failed before its stop: end what it started (its run follows)
            driver.kill()
            driver.wait()
    if stop == "kill the run":
        assert driver.returncode == 1 and "failed: refine seed 2024 (exit code -9)" in err
    elif stop == "stop the sweep":
        assert driver.returncode == 2 and "error: interrupted: 0 of 1 runs finished; rerun the same command" in err
        # main.py's own stop line: "interrupted during epoch N" or "after epoch N", as the signal falls
        assert "stopped: refine seed 2024: error: interrupted " in err and "failed:" not in err
    else:
        assert driver.returncode == -signal.SIGKILL
        deadline = time.time() + 120
        while process_state(run) not in (None, "Z") and time.time() < deadline:
            time.sleep(0.05)
        assert process_state(run) in (None, "Z"), "the run outlived its driver"
        last = (out / "refine/seed2024/run.err").read_text().strip().splitlines()[-1]
        assert last.startswith("error: interrupted"), last  # SIGTERM: main.py stopped cleanly
    assert not (out / "refine/seed2024/run.test.json").exists()
    saved_epochs = len(compare.parse_log(out / "refine/seed2024/run.out").epochs)

    rerun = run_sweep(command, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 to resume" in rerun.stderr
    assert json.loads((out / "refine/seed2024/run.json").read_text())["resumed"] is True
    log = (out / "refine/seed2024/run.out").read_text()
    assert saved_epochs >= 1 and log.count("\nEpoch: ") == 40  # every epoch, the early ones from the saved state
    assert "Final Test Results" in log


@pytest.mark.slow
def test_a_run_whose_folder_is_blocked_fails_the_sweep(toy_data, tmp_path):
    """The run folder cannot be made (a file in the way): the run is reported as failed, the others
    finish, and the sweep exits 1, not 0 with "nothing to report"."""
    out = tmp_path / "out"
    (out / "refine").mkdir(parents=True)
    (out / "refine/seed2024").write_text("in the way")
    result = run_sweep(sweep_command(toy_data, out, configs=("refine",)), tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"failed: refine seed 2024 (could not start): {out / 'refine/seed2024'}" in result.stderr
    assert "1 run(s) failed: refine seed 2024:" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [run["seed"] for run in summary["configs"][0]["runs"]] == [2025]


def test_missing_split_files_stop_the_sweep_before_any_run(toy_data, tmp_path):
    """lightgcn-original trains on TOY_train_original.csv, which the toy data lacks: refused up front."""
    out = tmp_path / "out"
    result = run_sweep(sweep_command(toy_data, out, configs=("refine", "lightgcn-original")), tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: config lightgcn-original: missing {toy_data / 'TOY/TOY_train_original.csv'}: ")
    assert result.stderr.count("\n") == 1 and not out.exists()


def original_ratings_only(data_dir):
    """The toy data as `download --refined` leaves it offline: the original train split, no augment file."""
    (data_dir / "TOY/TOY_train_augment.csv").rename(data_dir / "TOY/TOY_train_original.csv")
    return data_dir


def offline_hint(stderr):
    """The sweep command that the missing-augment-file error suggests (between backquotes)."""
    assert "or sweep the configs that need no LLM-refined file now: `" in stderr, stderr
    return stderr.rpartition("now: `")[2].rpartition("`")[0]


def test_missing_augment_file_suggests_the_sweep_on_the_original_ratings(toy_data, tmp_path, capsys):
    """The default sweep without the LLM-refined file names it and the sweep that needs no such file."""
    data_dir, out = original_ratings_only(toy_data), tmp_path / "out"
    assert experiments.main(["--dataset", "TOY", "--out", str(out), "--seeds", "1", "--", "--data_dir",
                             str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config lightgcn-augment: missing {data_dir / 'TOY/TOY_train_augment.csv'}: ")
    assert "python main.py --dataset TOY" in err and not out.exists()
    hint = offline_hint(err)
    assert hint == (f"python experiments.py --dataset TOY --out {out} --seeds 1 --configs lightgcn-original "
                    f'--config refine-original="--dataset_augment 0" -- --data_dir {data_dir}')
    options = experiments.parse_args(shlex.split(hint)[2:])
    assert options.extra_flags == ["--data_dir", str(data_dir)]
    # without the original split either, no such sweep is offered
    (data_dir / "TOY/TOY_train_original.csv").unlink()
    assert experiments.main(["--dataset", "TOY", "--out", str(out), "--seeds", "1", "--", "--data_dir",
                             str(data_dir)]) == 2
    assert "need no LLM-refined file" not in capsys.readouterr().err


@pytest.mark.slow
def test_the_suggested_offline_sweep_runs_as_printed(toy_data, tmp_path):
    data_dir, out = original_ratings_only(toy_data), tmp_path / "out"
    refused = run_sweep([sys.executable, str(ROOT / "experiments.py"), "--dataset", "TOY", "--out", str(out),
                         "--seeds", "1", "--", "--data_dir", str(data_dir)], tmp_path)
    assert refused.returncode == 2
    script, *argv = shlex.split(offline_hint(refused.stderr))[1:]
    split = argv.index("--")  # runs on the CPU (experiments.py's own flag), one epoch each (to every run)
    argv = argv[:split] + ["--devices", "cpu"] + argv[split:] + ["--epochs", "1", *TINY]
    result = run_sweep([sys.executable, str(ROOT / script), *argv], tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [entry["name"] for entry in summary["configs"]] == ["lightgcn-original", "refine-original"]


def test_seed_placeholder_is_each_runs_seed_and_the_manifest_keeps_it(toy_data, tmp_path):
    import shutil

    for seed in (1, 2):
        shutil.copytree(toy_data / "TOY", tmp_path / f"d{seed}" / "TOY")
    out, template = tmp_path / "out", str(tmp_path / "d{seed}")
    runs, manifest = sweep.plan_runs(out, "TOY", [("c", ["--data_dir", template])], [1, 2], ["--epochs", "1"])
    assert [run.flags for run in runs] == [["--dataset", "TOY", "--data_dir", str(tmp_path / f"d{seed}"), "--epochs", "1"]
                                           for seed in (1, 2)]
    assert runs[1].main_argv("cpu")[:4] == ["--dataset", "TOY", "--data_dir", str(tmp_path / "d2")]
    assert manifest == {"dataset": "TOY", "configs": [{"name": "c", "flags": ["--dataset", "TOY", "--data_dir", template,
                                                                              "--epochs", "1"]}]}
    run_files.write_manifest(out, manifest)
    # a later seed is the same config; its folder is checked as its run will read it
    with pytest.raises(experiments.InputError) as error:
        sweep.plan_runs(out, "TOY", [("c", ["--data_dir", template])], [3], ["--epochs", "1"])
    assert str(error.value).startswith(f"config c: missing {tmp_path / 'd3' / 'TOY' / 'TOY_train_augment.csv'}")
    with pytest.raises(experiments.InputError, match="config c ran with flags"):
        sweep.plan_runs(out, "TOY", [("c", ["--data_dir", str(tmp_path / "d1")])], [1], ["--epochs", "1"])


def test_baselines_are_checked_before_any_run(toy_data, tmp_path, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(sweep, "execute_local", lambda runs, *rest: started.extend(runs))
    out = tmp_path / "out"
    command = ["--dataset", "TOY", "--configs", "refine", "lightgcn-augment", "--config", "tuned=--t 3",
               "--seeds", "1", "--devices", "cpu", "--out", str(out), "--baseline"]
    extra = ["--", "--data_dir", str(toy_data)]
    for baselines, message in ((["nope"], f"error: --baseline nope: not a config of {out} (configs: "),
                               (["refine", "tuned"], "error: --baseline refine tuned: both train --model refine; ")):
        assert experiments.main(command + baselines + extra) == 2
        assert capsys.readouterr().err.startswith(message) and started == []
    assert experiments.main(command + ["lightgcn-augment", "refine"] + extra) == 0
    assert sorted(run.config for run in started) == ["lightgcn-augment", "refine", "tuned"]


def test_an_error_while_the_bar_is_drawn_starts_its_own_line(tmp_path, toy_data, monkeypatch, capsys):
    def broken(*args):
        raise experiments.InputError("something went wrong")

    monkeypatch.setattr(sweep, "execute_local", broken)
    code = experiments.main(["--dataset", "TOY", "--configs", "refine", "--seeds", "1", "--devices", "cpu",
                             "--out", str(tmp_path / "out"), "--", "--data_dir", str(toy_data)])
    err = capsys.readouterr().err
    assert code == 2 and "\nerror: something went wrong\n" in err and err.endswith("\n")


@pytest.mark.slow
def test_failing_config_is_reported_and_the_others_finish(toy_data, tmp_path):
    out = tmp_path / "out"
    command = sweep_command(toy_data, out, "--config", "broken=--learning_rate fast", configs=("refine",))
    result = run_sweep(command, tmp_path)
    assert result.returncode == 1
    assert "failed: broken seed 2024 (exit code 2): error: argument --learning_rate: invalid float value: 'fast'" \
        in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [(entry["name"], entry["seeds"]) for entry in summary["configs"]] == [("refine", 2), ("broken", 0)]


@pytest.mark.slow
def test_ray_executor_gives_the_local_results(toy_data, tmp_path):
    pytest.importorskip("ray")
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert run_sweep(sweep_command(toy_data, local), tmp_path).returncode == 0
    # Pinned to the CPU like the local side (which has --devices cpu): on a machine with a GPU, Ray would
    # otherwise give each run one, and a GPU run is another draw of the same distribution, not the same numbers.
    result = run_sweep(sweep_command(toy_data, remote, "--gpus_per_run", "0", executor="ray"), tmp_path)
    assert result.returncode == 0, result.stderr
    mine, theirs = (json.loads((folder / "summary.json").read_text()) for folder in (local, remote))
    for a, b in zip(mine["configs"], theirs["configs"]):
        assert [run["test"] for run in a["runs"]] == [run["test"] for run in b["runs"]]
        assert [run["best_epoch"] for run in a["runs"]] == [run["best_epoch"] for run in b["runs"]]
    for path in local.glob("*/seed*/run.test_users.csv"):
        assert path.read_text() == (remote / path.relative_to(local)).read_text()


# ----------------------------------------------------------------------------------------------
# The report on damaged files, per-user metrics with awkward ids, few seeds


@pytest.mark.parametrize("file,content,reason", [
    ("run.test.json", "{\"best_epoch\": 3, \"test\": {\"20\": ", "not valid JSON"),
    ("run.test.json", json.dumps({"test": {"20": {"precision": 0.1, "recall": 0.2, "ndcg": 0.3}}}),
     "best_epoch is None, not an integer"),
    ("run.test.json", '{"best_epoch": 3, "test": {"20": {"precision": 0.1, "recall": NaN, "ndcg": 0.3}}}',
     "recall at k = 20 is nan, not a finite number"),
    ("run.test_users.csv", "user_id,precision@20,recall@20,ndcg@20\n101,0.1,0.2\n", "line 2: 3 fields, not 4"),
    ("run.test_users.csv", "user_id,precision@20,recall@20,ndcg@20\n101,0.1,abc,0.3\n",
     "line 2: could not convert string to float: 'abc'"),
    ("run.test_users.csv", "user_id,precision@20,recall@20,ndcg@20\n101,0.1,nan,0.3\n", "line 2: a value that is not finite"),
    ("run.out", "garbage\n", "not a training log"),
])
def test_a_damaged_run_is_named_and_left_out(fake_sweep, capsys, file, content, reason):
    out, values = fake_sweep
    (out / "new/seed2025" / file).write_text(content)
    assert experiments.main(["--report", str(out)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "Traceback" not in err
    assert warnings[0].startswith(f"warning: {out / 'new/seed2025' / file}: {reason}")
    assert warnings[0].endswith("; new seed 2025 is left out of the report")
    summary = json.loads((out / "summary.json").read_text())
    assert [run["seed"] for run in summary["configs"][1]["runs"]] == [2024, 2026]
    assert summary["left_out"] == [{"config": "new", "seed": 2025, "file": f"new/seed2025/{file}",
                                    "reason": summary["left_out"][0]["reason"]}]
    recall = [values["new", seed][0][1] for seed in (2024, 2026)]
    assert summary["configs"][1]["mean"]["recall"] == pytest.approx(sum(recall) / 2)
    markdown = (out / "summary.md").read_text()
    assert "| new | 2† (1 left out) |" in markdown
    assert f"Left out (damaged files): new seed 2025 (new/seed2025/{file}: {reason}" in markdown


def test_a_damaged_run_through_the_command(fake_sweep):
    out, _ = fake_sweep
    (out / "base/seed2024/run.test.json").write_text("{")
    result = subprocess.run([sys.executable, str(ROOT / "experiments.py"), "--report", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"warning: {out / 'base/seed2024/run.test.json'}: not valid JSON")
    assert "| base | 2† (1 left out) |" in result.stdout


def test_few_seeds_are_marked_in_both_tables(fake_sweep):
    out, _ = fake_sweep
    summary = report.summarize(out)
    assert summary["configs"][1]["vs_baseline"]["seeds"] == 3
    text = report.markdown(summary)
    assert "| base | 3† |" in text and "| new | 3† |" in text
    p = summary["configs"][1]["vs_baseline"]["by_metric"]["recall"]["p"]
    assert f"| {report._p(p)}† |" in text
    assert text.count("† fewer than 5 seeds") == 2
    assert r"$^\dagger$" in report.latex(summary)
    for seed in (2027, 2028):  # five seeds: no mark
        for config in ("base", "new"):
            write_fake_run(out, config, seed, (0.1, 0.4 + seed % 3 / 100, 0.3), {101: (0.1, 0.2, 0.3)})
    assert "†" not in report.markdown(report.summarize(out))


def test_per_user_ids_with_commas_read_back_equal(tmp_path):
    """String ids may hold commas and quotes (main.py accepts them): read with the csv module, not split."""
    import csv

    rows = {"a,b": (0.1, 0.25, 0.5), 'say "hi"': (0.0, 1 / 3, 0.75), "7": (0.2, 0.5, 2 / 3)}
    path = tmp_path / "run.test_users.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "precision@20", "recall@20", "ndcg@20"])
        writer.writerows([user, *map(repr, values)] for user, values in rows.items())
    per_user = report.read_per_user(path)
    assert per_user == {metric: {user: values[i] for user, values in rows.items()}
                        for i, metric in enumerate(utils.METRICS)}


def test_per_user_ids_round_trip_through_main_py(tmp_path):
    """main.write_per_user_metrics writes, report.read_per_user reads: equal, ids with commas included."""
    from types import SimpleNamespace

    import torch

    import main

    ids = np.array(["u,1", 'u"2', "u3", "plain"], dtype=object)
    users = torch.tensor([2, 0, 1])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.25, 0.5, 0.75], [1 / 3, 2 / 3, 1.0]])  # metric x user
    per_k = [tuple(values * 0), tuple(values)]  # k = 5, k = 20: the file holds the largest k
    path = tmp_path / "run.test_users.csv"
    main.write_per_user_metrics(path, SimpleNamespace(user_ids=ids), users, per_k, [5, 20])
    per_user = report.read_per_user(path)
    assert per_user == {metric: {ids[user]: values[i, j].item() for j, user in enumerate(users.tolist())}
                        for i, metric in enumerate(utils.METRICS)}


# ----------------------------------------------------------------------------------------------
# The report's statistics flags: --margin, --paired, --published, and compare.py --runs


def write_published_log(path, recall, ndcg):
    """A log in the published format with one epoch and its final test block at k = 20."""
    rule = "#" * 77
    path.write_text(f"{rule}\ndataset: TOY\n{rule}\n\nEpoch: 001, Loss: 0.5000\n"
                    f"Precision@20: 0.1000, Recall@20: 0.2000, NDCG@20: 0.3000\n{rule}\nFinal Test Results\n"
                    f"Precision@20: 0.1500, Recall@20: {recall:.4f}, NDCG@20: {ndcg:.4f}\n{rule}\n")


def test_published_run_against_the_prediction_interval(fake_sweep, tmp_path):
    out, values = fake_sweep
    log = tmp_path / "published.out"
    write_published_log(log, recall=0.4, ndcg=0.9)
    assert experiments.main(["--report", str(out), "--published", f"new={log}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    recall = np.array([values["new", seed][0][1] for seed in (2024, 2025, 2026)])
    half = 4.302652729911275 * recall.std(ddof=1) * math.sqrt(1 + 1 / 3)  # t(0.975, 2)
    (item,) = summary["published"]
    assert item["config"] == "new" and item["test"]["recall"] == 0.4 and item["test"]["ndcg"] == 0.9
    assert item["pi95"]["recall"] == pytest.approx([recall.mean() - half, recall.mean() + half], rel=1e-9)
    where = "inside" if item["pi95"]["recall"][0] <= 0.4 <= item["pi95"]["recall"][1] else "below"
    markdown = (out / "summary.md").read_text()
    assert f"| new | {log} | Recall@20 | 0.4000 |" in markdown and f"| {where} |" in markdown
    assert "| NDCG@20 | 0.9000 |" in markdown and "| above |" in markdown
    # compare.py gives the same interval from the config folder's seeds.
    result = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(log), "--runs", str(out / "new")],
                            capture_output=True, text=True, timeout=300)
    low, high = item["pi95"]["recall"]
    assert result.returncode == 0, result.stderr
    assert f"Recall@20: 95% prediction interval of one run of {out / 'new'} (3 seeds): [{low:.4f}, {high:.4f}]" \
        in result.stdout
    assert "NDCG@20" in result.stdout and "  published: 0.9000, above" in result.stdout


@pytest.mark.parametrize("flags, message", [
    (["--published", "nope=x.out"], "error: --published nope=x.out: nope is not a config"),
    (["--published", "new"], "error: --published new: write CONFIG=LOG"),
    (["--margin", "0"], "--margin: 0: give a margin above 0 and below 100%"),
    (["--margin", "abc"], "--margin: 'abc' is not a number or a percentage"),
])
def test_statistics_flags_refuse_bad_values(fake_sweep, capsys, flags, message):
    out, _ = fake_sweep
    try:
        code = experiments.main(["--report", str(out), *flags])
    except SystemExit as stop:  # argparse's refusal of a flag value
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_margin_and_paired(fake_sweep, capsys):
    out, values = fake_sweep
    assert experiments.main(["--report", str(out), "--margin", "5%", "--paired", "one shared random stream"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["margin"] == 0.05 and summary["test"] == "paired-t"
    assert summary["paired_because"] == "one shared random stream"
    recall = summary["configs"][1]["vs_baseline"]["by_metric"]["recall"]
    d = np.array([values["new", s][0][1] - values["base", s][0][1] for s in (2024, 2025, 2026)])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert recall["test"] == "paired-t" and recall["p"] == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), rel=1e-9)
    assert "(asked for: one shared random stream)" in (out / "summary.md").read_text()
    assert "seeds for ±5%" in capsys.readouterr().out


def test_amazon_r_is_the_validation_choice_of_the_committed_grid():
    """The study's --r for Amazon Digital Music is the grid's highest mean validation Recall@20 at each
    run's best epoch (ties: the smaller --r), read from the logs alone, never a test metric."""
    import re

    grid = ROOT / "results4comparison" / "Amazon_Digital_Music-r-grid"
    means = {}
    for folder in sorted(grid.glob("refine-r*"), key=lambda path: int(path.name.split("-r")[1])):
        values = []
        for run in sorted(folder.glob("seed*")):
            best = json.loads((run / "run.test.json").read_text())["best_epoch"]
            values.append(compare.parse_log(run / "run.out").epoch(best).metrics[20][1])
        assert len(values) == 3, folder
        means[int(folder.name.split("-r")[1])] = sum(values) / 3
    assert sorted(means) == [50, 100, 200, 300]
    chosen = max(means, key=lambda r: (means[r], -r))
    assert report.best_on_validation(report.summarize(grid)).startswith(f"refine-r{chosen} ")
    stated = re.search(r"chosen on the grid: `--r (\d+)`", (ROOT / "docs" / "relabel.md").read_text(), re.IGNORECASE)
    assert stated and int(stated.group(1)) == chosen
    study = ROOT / "results4comparison" / "Amazon_Digital_Music-relabel" / "experiments.json"
    if study.is_file():  # the study's ReFINe configs ran with it
        for entry in json.loads(study.read_text())["configs"]:
            if entry["name"].startswith("refine-"):
                flags = entry["flags"]
                assert flags[len(flags) - 1 - flags[::-1].index("--r") + 1] == str(chosen), entry["name"]
