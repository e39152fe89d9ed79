"""The report of an experiments.py sweep: statistics over seeds and tests of configs against a
baseline, as markdown, LaTeX, JSON and two plots.

    python experiments.py --report results/ML-100K          # the command; this module is its library

From each finished run in OUT (run_files.py names the folder layout) it reads run.test.json,
run.test_users.csv and the log run.out, once each. Per config, at k = 20: mean +- sample std, the
95% t interval of the mean and the 95% prediction interval of one more run. Against a baseline
config, per metric (significance.py): the difference of the means with Welch's 95% interval and a
hierarchical bootstrap interval (seeds, then users), Welch's p, Holm-adjusted over the report, an
equivalence test within +-margin, the smallest detectable difference and one verdict word. With
several baselines (one per model), each config is tested against the one trained with its own
--model. Written to OUT as summary.md, summary.tex, summary.json, curves.png and bars.png.
"""
import argparse
import csv
import json
import math
import sys
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import compare
import significance
from run_files import MANIFEST, RunPaths, read_manifest, run_status, seed_folders
from utils import METRICS, InputError, atomic_write

MIN_SEEDS = 5  # fewer seeds than this: the tables mark the count and the test over seeds with FEW
FEW = "†"
COMPARED = ("recall", "ndcg")  # the metrics tested against a baseline (one Holm family over all of them)


@dataclass
class RunResult:
    seed: int
    log: str                         # path of run.out relative to OUT
    best_epoch: int
    train_seconds: float | None
    test: dict                       # metric -> value at k
    per_user: dict                   # metric -> {user id: value at k}; {} if the file is absent or at another k
    curve: list = field(default_factory=list)  # [(epoch, validation recall@k)]

    @property
    def valid_at_best(self) -> float | None:
        """Validation Recall@k at the best epoch: what a choice of hyperparameters may look at."""
        return dict(self.curve).get(self.best_epoch)


class DamagedRun(Exception):
    """A finished run whose files cannot be read as written (invalid JSON, a missing key, NaN, a
    garbled per-user CSV): the report names the file and leaves the run out."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_test(path: Path, k: int) -> dict:
    """run.test.json, checked: best_epoch an integer, finite test metrics at k, train_seconds a number if present."""
    try:
        test = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedRun(path, f"cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    except ValueError as exc:
        raise DamagedRun(path, f"not valid JSON ({exc})") from None
    if not isinstance(test, dict) or not isinstance(test.get("test"), dict) or not test["test"]:
        raise DamagedRun(path, 'no "test" metrics')
    if str(k) not in test["test"]:  # the run is fine, the question is not: every run of main.py has its --top_k
        raise InputError(f"{path}: no metrics at k = {k} (has {', '.join(test['test'])}); choose --k among them")
    at_k = test["test"][str(k)]
    for metric in METRICS:
        if not isinstance(at_k, dict) or not _finite(at_k.get(metric)):
            raise DamagedRun(path, f"{metric} at k = {k} is {at_k.get(metric) if isinstance(at_k, dict) else at_k!r}, "
                                   f"not a finite number")
    if not isinstance(test.get("best_epoch"), int) or isinstance(test["best_epoch"], bool):
        raise DamagedRun(path, f"best_epoch is {test.get('best_epoch')!r}, not an integer")
    if test.get("train_seconds") is not None and not _finite(test["train_seconds"]):
        raise DamagedRun(path, f"train_seconds is {test['train_seconds']!r}, not a finite number")
    return test


def read_per_user(path: Path, k: int | None = None) -> dict:
    """run.test_users.csv (csv module: ids may hold commas) -> {metric: {user id: value}}; {} tables if
    absent, or if `k` is given and the file holds another cut-off (it holds the run's largest k)."""
    per_user = {metric: {} for metric in METRICS}
    if not path.exists():
        return per_user  # runs made before main.py wrote it: no tests over users
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DamagedRun(path, f"cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if not rows or len(rows[0]) != 1 + len(METRICS) or rows[0][0] != "user_id":
        raise DamagedRun(path, "no header user_id,precision@K,recall@K,ndcg@K")
    if k is not None and rows[0][1:] != [f"{metric}@{k}" for metric in METRICS]:
        return per_user  # values at another k: no interval over users at this one
    for line, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != 1 + len(METRICS):
                raise ValueError(f"{len(row)} fields, not {1 + len(METRICS)}")
            values = [float(value) for value in row[1:]]
            if not all(map(math.isfinite, values)) or row[0] in per_user[METRICS[0]]:
                raise ValueError("a value that is not finite" if not all(map(math.isfinite, values))
                                 else f"user {row[0]} a second time")
        except ValueError as exc:
            raise DamagedRun(path, f"line {line}: {exc}") from None
        for metric, value in zip(METRICS, values):
            per_user[metric][row[0]] = value
    return per_user


def read_run(out: Path, folder: Path, seed: int, k: int) -> RunResult:
    """One finished run's files, each read once; DamagedRun names the first unusable one."""
    paths = RunPaths.in_sweep(folder)
    test = read_test(paths.test, k)
    try:
        log = compare.parse_log(paths.log)  # the validation curve, and older runs' training time
    except InputError as exc:
        raise DamagedRun(paths.log, str(exc).partition(": ")[2] or str(exc)) from None
    train_seconds = test.get("train_seconds", log.training_seconds)
    per_user = read_per_user(paths.test_users, k)
    curve = [(record.epoch, record.metrics[k][1]) for record in log.epochs if k in record.metrics]
    return RunResult(seed=seed, log=str(paths.log.relative_to(out)),
                     best_epoch=test["best_epoch"], train_seconds=train_seconds,
                     test={metric: test["test"][str(k)][metric] for metric in METRICS},
                     per_user=per_user, curve=curve)


@dataclass
class Collected:
    """What the report reads from OUT, once: each config's usable finished runs, and the runs left out."""
    dataset: str
    configs: list                    # [(name, flags, [RunResult by seed])]
    left_out: list                   # [{"config", "seed", "file", "reason"}]: damaged runs


def collect(out: Path, k: int) -> Collected:
    """Every finished run of OUT; a damaged one is named on stderr (one line) and left out."""
    manifest = read_manifest(out)
    configs, left_out = [], []
    for entry in manifest["configs"]:
        runs = []
        for seed, folder in seed_folders(out / entry["name"]).items():
            if run_status(folder) != "done":
                continue
            try:
                runs.append(read_run(out, folder, seed, k))
            except DamagedRun as damage:
                print(f"warning: {damage}; {entry['name']} seed {seed} is left out of the report", file=sys.stderr)
                left_out.append({"config": entry["name"], "seed": seed, "file": str(damage.path.relative_to(out)),
                                 "reason": damage.reason})
        configs.append((entry["name"], entry["flags"], runs))
    return Collected(manifest["dataset"], configs, left_out)


def describe(values) -> dict:
    """n, mean, sample std (ddof 1) and the 95% t interval of the mean; None where n is too small."""
    import numpy as np
    from scipy import stats

    values = np.asarray([value for value in values if value is not None and math.isfinite(value)], dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else None
    std = float(values.std(ddof=1)) if n > 1 else None
    ci = None
    if n > 1:
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"n": n, "mean": mean, "std": std, "ci95": ci}


def per_user_arrays(runs, baseline_runs, metric):
    """(runs x users, baseline runs x users) of per-user values on the users every run scored, for
    the hierarchical interval; (None, None) when a run has no per-user file at the report's k."""
    import numpy as np

    tables = [run.per_user[metric] for run in list(runs) + list(baseline_runs)]
    if not tables or not all(tables):
        return None, None
    users = sorted(set.intersection(*(set(table) for table in tables)))
    if not users:
        return None, None
    rows = [[table[user] for user in users] for table in tables]
    return np.array(rows[:len(runs)]), np.array(rows[len(runs):])


def compare_runs(runs, baseline_runs, metric, margin, paired):
    """significance.compare of two configs' runs on one metric; paired: only the seeds both finished,
    matched by seed."""
    if paired:
        seeds = {run.seed for run in runs} & {run.seed for run in baseline_runs}
        runs, baseline_runs = ([run for run in sorted(group, key=lambda run: run.seed) if run.seed in seeds]
                               for group in (runs, baseline_runs))
    x = [run.test[metric] for run in runs]
    y = [run.test[metric] for run in baseline_runs]
    if not x or not y:
        return None
    users, users_baseline = per_user_arrays(runs, baseline_runs, metric)
    return significance.compare(x, y, users, users_baseline, margin=margin, paired=paired)


def model_of(flags) -> str:
    """The --model a config's main.py flags train (main.py's default where they do not say)."""
    import cli

    try:
        return cli.parse_main_flags(flags).model
    except argparse.ArgumentError as exc:
        raise InputError(f"config flags {' '.join(flags)}: {exc}") from None


def baseline_of_each(out: Path, configs, baselines) -> dict:
    """{config name: the baseline it is tested against, or None}. One baseline: every other config.
    Several: the one trained with the config's --model; two baselines of one model are refused."""
    names = [name for name, _, _ in configs]
    for baseline in baselines:
        if baseline not in names:
            raise InputError(f"--baseline {baseline}: not a config of {out} (configs: {', '.join(names)})")
    if len(baselines) == 1:
        return {name: None if name == baselines[0] else baselines[0] for name in names}
    models = {name: model_of(flags) for name, flags, _ in configs}
    by_model = {}
    for baseline in baselines:
        other = by_model.setdefault(models[baseline], baseline)
        if other != baseline:
            raise InputError(f"--baseline {other} {baseline}: both train --model {models[baseline]}; "
                             f"give one baseline per model")
    return {name: None if name in baselines else by_model.get(models[name]) for name in names}


def summarize(out: Path, baseline=None, k=20, collected=None, margin=significance.DEFAULT_MARGIN,
              paired=None) -> dict:
    """The summary.json dictionary of the finished runs in OUT (`collected`: collect()'s result, if read).

    `baseline`: a config name, a list of them (one per model), or None for the first config.
    `margin`: the equivalence margin, relative to the baseline's mean. `paired`: None (Welch's
    unpaired test, the default), or the user's reason for testing runs paired by seed."""
    collected = collected or collect(out, k)
    dataset, configs = collected.dataset, collected.configs
    names = [name for name, _, _ in configs]
    baselines = [baseline] if isinstance(baseline, str) else list(baseline or names[:1])
    if not baselines:
        raise InputError(f"{out}: no configs in its {MANIFEST}")
    tested_against = baseline_of_each(out, configs, baselines)
    runs_of = {name: runs for name, _, runs in configs}
    summary = {"dataset": dataset, "k": k, "baseline": baselines[0], "baselines": baselines,
               "test": significance.TESTS[paired is not None], "paired_because": paired, "margin": margin,
               "configs": [], "left_out": collected.left_out}
    family = []  # every comparison of the report: one Holm correction over all of them
    for name, flags, runs in configs:
        baseline, base_runs = tested_against[name], runs_of.get(tested_against[name])
        stats = {metric: describe([run.test[metric] for run in runs]) for metric in METRICS}
        for key in ("best_epoch", "train_seconds", "valid_at_best"):
            stats[key] = describe([getattr(run, key) for run in runs])
        entry = {"name": name, "flags": flags, "seeds": len(runs),
                 "runs": [{"seed": run.seed, "log": run.log, "best_epoch": run.best_epoch,
                           "train_seconds": run.train_seconds, "valid_at_best": run.valid_at_best,
                           "test": run.test} for run in runs],
                 "mean": {key: value["mean"] for key, value in stats.items()},
                 "std": {key: value["std"] for key, value in stats.items()},
                 "ci95": {metric: stats[metric]["ci95"] for metric in METRICS},
                 "pi95": {metric: significance.prediction_interval([run.test[metric] for run in runs])
                          for metric in METRICS},
                 "vs_baseline": None}
        if baseline is not None and runs and base_runs:
            comparison = {metric: compare_runs(runs, base_runs, metric, margin, paired is not None)
                          for metric in COMPARED}
            family += [(entry, metric, result) for metric, result in comparison.items() if result]
            entry["vs_baseline"] = {"baseline": baseline, "seeds": len(runs), "baseline_seeds": len(base_runs),
                                    "recall_rel_diff": comparison["recall"].rel_diff, "by_metric": {}}
        summary["configs"].append(entry)
    significance.adjust([result for _, _, result in family], margin)
    for entry, metric, result in family:
        entry["vs_baseline"]["by_metric"][metric] = {"test": summary["test"], **dataclasses.asdict(result)}
    return summary


def _num(value, digits=4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _p(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:+.2f}%"


def _interval(values, pct=True) -> str:
    if values is None:
        return "–"
    low, high = values
    return f"[{100 * low:+.2f}%, {100 * high:+.2f}%]" if pct else f"[{low:.4f}, {high:.4f}]"


def verdict_text(verdict, margin) -> str:
    return f"equivalent (±{100 * margin:g}%)" if verdict == "equivalent" else verdict


METRIC_LABEL = {"precision": "Precision", "recall": "Recall", "ndcg": "NDCG"}


def table_rows(summary):
    """Rows of the report tables: metrics over seeds, and for each baseline the comparisons against it
    ({baseline: rows}, one row per config and compared metric)."""
    k, margin = summary["k"], summary["margin"]
    metric_rows = []
    test_rows = {baseline: [] for baseline in summary["baselines"]}
    damaged = {}
    for run in summary.get("left_out", []):
        damaged[run["config"]] = damaged.get(run["config"], 0) + 1
    for entry in summary["configs"]:
        cells = [entry["name"], str(entry["seeds"]) + (FEW if 0 < entry["seeds"] < MIN_SEEDS else "")
                 + (f" ({damaged[entry['name']]} left out)" if entry["name"] in damaged else "")]
        for metric in METRICS:
            mean, std, ci = entry["mean"][metric], entry["std"][metric], entry["ci95"][metric]
            cell = _num(mean) + ("" if std is None else f" ± {std:.4f}")
            if metric != "precision":
                cell += "" if ci is None else f" {_interval(ci, pct=False)}"
            cells.append(cell)
        cells += [_num(entry["mean"].get("valid_at_best")), _num(entry["mean"]["best_epoch"], 0),
                  _num(entry["mean"]["train_seconds"], 0)]
        metric_rows.append(cells)
        versus = entry["vs_baseline"]
        if versus is None:
            continue
        few = FEW if min(versus["seeds"], versus["baseline_seeds"]) < MIN_SEEDS else ""
        for metric, m in versus["by_metric"].items():
            test_rows[versus["baseline"]].append([
                entry["name"], f"{METRIC_LABEL[metric]}@{k}", _pct(m["rel_diff"]), _interval(m["ci95_rel_diff"]),
                _interval(m["ci95_rel_diff_hier"]), _p(m["p"]) + (few if m["p"] is not None else ""),
                _p(m["p_holm"]), verdict_text(m["verdict"], margin),
                "–" if m["mde_rel"] is None else f"{100 * m['mde_rel']:.2f}%",
                "–" if m["seeds_for_margin"] is None else str(m["seeds_for_margin"])])
    metric_head = ["config", "seeds", f"Precision@{k}", f"Recall@{k} [95% CI]", f"NDCG@{k} [95% CI]",
                   f"valid Recall@{k} at best epoch", "best epoch", "train s"]
    test_head = ["config", "metric", "Δ", "95% CI (seeds)", "95% CI (seeds, users)", "p", "p (Holm)", "verdict",
                 "detectable Δ", f"seeds for ±{100 * margin:g}%"]
    return (metric_head, metric_rows), (test_head, test_rows)


def published_rows(summary):
    """Rows of the published-runs table: each published single run against our prediction interval."""
    k = summary["k"]
    rows = []
    for item in summary.get("published", []):
        for metric in COMPARED:
            interval, value = item["pi95"][metric], item["test"][metric]
            where = "–" if interval is None else ("inside" if interval[0] <= value <= interval[1] else
                                                 "below" if value < interval[0] else "above")
            rows.append([item["config"], item["log"], f"{METRIC_LABEL[metric]}@{k}", _num(value),
                         _interval(interval, pct=False), where])
    return ["config", "published run", "metric", "value", "95% prediction interval of one run", "where"], rows


def notes(summary, rows, reasons=True) -> list:
    """The lines under a table: what a † means, which damaged runs were left out (only when it applies)."""
    lines = []
    if any(FEW in cell for row in rows for cell in row):
        lines.append(f"{FEW} fewer than {MIN_SEEDS} seeds: the interval is wide and a test over seeds has little "
                     f"power, so a p-value there means little.")
    if summary.get("left_out") and rows and "left out" in " ".join(cell for row in rows for cell in row):
        lines.append("Left out (damaged files): " + "; ".join(
            f"{run['config']} seed {run['seed']}" + (f" ({run['file']}: {run['reason']})" if reasons else "")
            for run in summary["left_out"]) + ".")
    return lines


def test_caption(summary) -> str:
    margin = f"±{100 * summary['margin']:g}%"
    if summary["test"] == "paired-t":
        test = (f"paired t-test over the seeds both configs finished (asked for: {summary['paired_because']}); "
                f"its 95% interval")
    else:
        test = "Welch's unpaired t-test over seeds; its 95% interval"
    return (f"Δ: difference of the means relative to the baseline's mean; p: {test}, relative, as '95% CI "
            f"(seeds)'; '95% CI (seeds, users)': hierarchical bootstrap, seeds then test users; p (Holm): "
            f"Holm-adjusted over every comparison of this report. Verdict: better / worse when p (Holm) < 0.05 "
            f"and both intervals exclude 0; equivalent ({margin}) when the Holm-adjusted equivalence test (TOST) "
            f"< 0.05 and both intervals lie inside {margin}; otherwise inconclusive. Detectable Δ: the smallest "
            f"difference detectable at 80% power with these seeds; seeds for {margin}: seeds per config to "
            f"detect a difference of {margin} at 80% power.")


def unfinished_baseline_note(summary, baseline) -> list:
    """The line under a test table whose baseline has no finished run: else the empty table says nothing."""
    if any(entry["name"] == baseline and entry["seeds"] for entry in summary["configs"]):
        return []
    return [f"No finished run of {baseline}: nothing is tested against it (its runs failed or have not run; "
            f"rerun the sweep to finish them, or give another --baseline)."]


def markdown(summary) -> str:
    (mh, mr), (th, tr) = table_rows(summary)
    table = compare.markdown_table

    def with_notes(rows, head, baseline=None):
        found = notes(summary, rows) + (unfinished_baseline_note(summary, baseline) if baseline else [])
        return [table(head, rows)] + ([""] + found if found else [])

    text = [f"## {summary['dataset']}: test metrics at k = {summary['k']} over seeds", "",
            "mean ± sample std over seeds; [95% confidence interval of the mean, t distribution]; the "
            "validation Recall at each run's best epoch (the only metric a choice of hyperparameters may "
            "read), best epoch and training seconds are means.", "", *with_notes(mr, mh), ""]
    best = best_on_validation(summary)
    if best:
        text += [f"Highest mean validation Recall@{summary['k']} at the best epoch: {best}.", ""]
    for baseline, rows in tr.items():
        text += [f"## Against {baseline}", "", test_caption(summary) + (
                     f" The configs trained with {baseline}'s --model." if len(tr) > 1 else ""), "",
                 *with_notes(rows, th, baseline), ""]
    if summary.get("published"):
        head, rows = published_rows(summary)
        text += ["## Published single runs", "", "Where a published run falls in the 95% prediction interval of "
                 "one run of ours (mean ± t · sd · sqrt(1 + 1/n) over our seeds).", "", table(head, rows), ""]
    return "\n".join(text)


def best_on_validation(summary) -> str | None:
    """The config with the highest mean validation Recall@k at the best epoch (ties: the first), with
    its value; None if no config has one."""
    scored = [(entry["mean"].get("valid_at_best"), entry["name"]) for entry in summary["configs"]
              if entry["mean"].get("valid_at_best") is not None]
    if not scored:
        return None
    value = max(value for value, _ in scored)
    name = next(name for v, name in scored if v == value)
    return f"{name} ({value:.4f})"


def latex(summary) -> str:
    (mh, mr), (th, tr) = table_rows(summary)

    def esc(text):
        return (text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%")
                .replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--").replace(FEW, r"$^\dagger$"))

    def table(head, rows, caption, baseline=None):
        spec = "l" + "r" * (len(head) - 1)
        body = [r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(caption)}}}", rf"\begin{{tabular}}{{{spec}}}",
                r"\toprule", " & ".join(esc(cell) for cell in head) + r" \\", r"\midrule"]
        body += [" & ".join(esc(cell) for cell in row) + r" \\" for row in rows]
        body += [r"\bottomrule", r"\end{tabular}"]
        body += [r"\par\footnotesize " + esc(line) for line in notes(summary, rows, reasons=False)
                 + (unfinished_baseline_note(summary, baseline) if baseline else [])]
        return "\n".join(body + [r"\end{table}"])

    tables = [table(mh, mr, f"{summary['dataset']}: test metrics at k = {summary['k']}, mean ± std over seeds "
                            f"[95% CI]")]
    tables += [table(th, rows, f"{summary['dataset']}: against {baseline}. {test_caption(summary)}", baseline)
               for baseline, rows in tr.items()]
    if summary.get("published"):
        head, rows = published_rows(summary)
        tables.append(table(head, rows, f"{summary['dataset']}: published single runs against the 95% "
                                        f"prediction interval of one run of ours"))
    return "\n\n".join(["% needs \\usepackage{booktabs}"] + tables) + "\n"


def plot(out: Path, summary, configs, k) -> None:
    """curves.png (validation Recall@k of `configs`, collect()'s runs) and bars.png (test metrics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for name, _, runs in configs:
        curves = [dict(run.curve) for run in runs if run.curve]
        if not curves:
            continue
        epochs = sorted(set().union(*curves))
        values = [[curve[epoch] for curve in curves if epoch in curve] for epoch in epochs]
        line, = axis.plot(epochs, [np.mean(v) for v in values], label=f"{name} (n={len(curves)})", linewidth=1)
        axis.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], alpha=0.2,
                          color=line.get_color(), linewidth=0)
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"validation Recall@{k}")
    axis.set_title(f"{summary['dataset']}: validation Recall@{k}, mean over seeds, min-max band")
    axis.legend(fontsize="small")
    figure.tight_layout()
    with atomic_write(out / "curves.png", "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    entries = [entry for entry in summary["configs"] if entry["seeds"]]
    for axis, metric, title in zip(axes, ("recall", "ndcg"), (f"Recall@{k}", f"NDCG@{k}")):
        positions = np.arange(len(entries))
        means = [entry["mean"][metric] for entry in entries]
        errors = [entry["std"][metric] or 0 for entry in entries]
        axis.bar(positions, means, yerr=errors, capsize=4, color="lightsteelblue", edgecolor="black")
        for position, entry in zip(positions, entries):
            seeds = [run["test"][metric] for run in entry["runs"]]
            axis.plot([position] * len(seeds), seeds, "k.", markersize=4)
        low = min(min(run["test"][metric] for run in entry["runs"]) for entry in entries) if entries else 0
        axis.set_ylim(low * 0.97, None)
        axis.set_xticks(positions, [entry["name"] for entry in entries], rotation=30, ha="right")
        axis.set_title(f"test {title}: mean ± std, dots = seeds")
        axis.set_ylabel("(axis does not start at 0)", fontsize="small")
    figure.tight_layout()
    with atomic_write(out / "bars.png", "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)


def published_runs(summary, published) -> list:
    """[{config, log, test, pi95}]: each (config, LOG) pair's final test metrics at k, LOG a log file
    or published:NAME (compare.resolve_log), with the config's prediction interval of one run."""
    entries = {entry["name"]: entry for entry in summary["configs"]}
    found = []
    for config, argument in published:
        if config not in entries:
            raise InputError(f"--published {config}={argument}: {config} is not a config of this sweep "
                             f"(configs: {', '.join(entries)})")
        log = compare.parse_log(compare.resolve_log(argument))
        if log.final_test is None or summary["k"] not in log.final_test:
            raise InputError(f"--published {config}={argument}: the log has no final test metrics at "
                             f"k = {summary['k']}")
        values = dict(zip(METRICS, log.final_test[summary["k"]]))
        found.append({"config": config, "log": str(argument), "test": values, "pi95": entries[config]["pi95"]})
    return found


def report(out: Path, baseline=None, k=20, margin=significance.DEFAULT_MARGIN, paired=None,
           published=()) -> dict:
    """Write summary.md/.tex/.json, curves.png and bars.png into OUT; print the markdown.

    `published`: [(config, LOG)] single published runs to place in the config's prediction interval."""
    collected = collect(out, k)  # every run's files read once, for the tables and the plots
    summary = summarize(out, baseline, k, collected, margin, paired)
    if published:
        summary["published"] = published_runs(summary, published)
    if not any(entry["seeds"] for entry in summary["configs"]):
        print(f"no finished runs in {out} yet: nothing to report", file=sys.stderr)
        return summary
    text = markdown(summary)
    with atomic_write(out / "summary.md") as handle:
        handle.write(text)
    with atomic_write(out / "summary.tex") as handle:
        handle.write(latex(summary))
    with atomic_write(out / "summary.json") as handle:
        json.dump(summary, handle, indent=1, allow_nan=False)
    plot(out, summary, collected.configs, k)
    print(text)
    written = ("summary.md", "summary.tex", "summary.json", "curves.png", "bars.png")
    print(f"written: {', '.join(str(out / name) for name in written)}", file=sys.stderr)
    return summary
