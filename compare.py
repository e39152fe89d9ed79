"""Compare training logs (ours or the authors' results4comparison) and plot their learning curves.

    python compare.py results4comparison/ReFINe_ML-100K.out results4comparison/LightGCN_ML-100K.out \
        --labels refine lightgcn --markdown --plot compare_ML-100K.png

The first log is the reference: every other run gets absolute and relative differences of its
final test metrics against it. Any log in the published format parses: ReFINe's and ReFINe++'s
results4comparison logs, and the logs main.py writes (extra header keys and extra lines, such as
warnings or a "no early stop" notice, are skipped).
"""
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import entry
from run_files import RunPaths, seed_folders
from utils import ArgumentParser, HelpFormatter, InputError, atomic_write, check_output_path

RULE_RE = re.compile(r"^#{10,}\s*$")
HEADER_RE = re.compile(r"^([A-Za-z_][\w.-]*):\s?(.*)$")
FLOAT = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"
EPOCH_RE = re.compile(rf"^Epoch:\s*(\d+),\s*Loss:\s*{FLOAT}")
METRIC_RE = re.compile(
    rf"^Precision@(\d+):\s*{FLOAT},\s*Recall@\1:\s*{FLOAT},\s*NDCG@\1:\s*{FLOAT}"
)
EARLY_STOP_RE = re.compile(r"^Early stopping at epoch (\d+)")
# main.py's notice when the epoch budget runs out first; any wording that names the best
# checkpoint's epoch is accepted.
BEST_CHECKPOINT_RE = re.compile(r"best checkpoint\D*?(\d+)", re.IGNORECASE)
TRAIN_TIME_RE = re.compile(rf"^Training completed in {FLOAT} seconds")
SAVE_RE = re.compile(r"^Save:")

METRIC_NAMES = ("Precision", "Recall", "NDCG")


@dataclass
class EpochRecord:
    """One evaluated epoch: training loss and validation metrics {k: (precision, recall, ndcg)}."""

    epoch: int
    loss: float
    metrics: dict = field(default_factory=dict)
    saved: bool = False  # a "Save:" line followed, i.e. a new best validation Recall@20


@dataclass
class ParsedLog:
    """A parsed training log (utils.RunLog is the stream main.py writes one with)."""

    path: str
    header: dict
    top_k: list
    epochs: list  # EpochRecord, sorted by epoch
    best_epoch: int | None
    best_valid: dict | None  # {k: (precision, recall, ndcg)}
    final_test: dict | None  # None when the run has not finished
    training_seconds: float | None

    def epoch(self, number):
        """The record of epoch `number`, or None."""
        return next((rec for rec in self.epochs if rec.epoch == number), None)

    def available_k(self):
        """Cut-offs the log reports, from the header's top_k or else from the metric lines."""
        if self.top_k:
            return list(self.top_k)
        seen = set()
        for metrics in [rec.metrics for rec in self.epochs] + [self.final_test or {}]:
            seen.update(metrics)
        return sorted(seen)


def parse_top_k(value):
    """'[5, 10, 15, 20]' (or "['2', '0']" from upstream's type=list flag) -> [5, 10, 15, 20]."""
    if re.fullmatch(r"\[\s*'\d'\s*(,\s*'\d'\s*)*\]", value.strip()):
        # upstream parsed `--top_k 20` character by character; the digits spell one number
        return [int("".join(re.findall(r"\d", value)))]
    return [int(tok) for tok in re.findall(r"\d+", value)]


def parse_log_text(text, path="<text>"):
    """Parse the text of a log in the published format into a ParsedLog (see parse_log)."""
    header = {}
    epochs = {}
    best_epoch = None
    best_valid = None
    final_test = None
    training_seconds = None

    rules_seen = 0
    current = None  # the dict metric lines go into: an epoch's, best_valid or final_test
    last_epoch = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if RULE_RE.match(line):
            rules_seen += 1
            continue
        if rules_seen == 1 and not epochs:
            # only the first rule block is the argument header; later `key: value` lines
            # (user: 938, ...) belong to the data summary
            match = HEADER_RE.match(line)
            if match:
                header.setdefault(match.group(1), match.group(2).strip())
            continue
        match = EPOCH_RE.match(line)
        if match:
            number = int(match.group(1))
            # a resumed run may log an epoch again; its last report wins
            record = EpochRecord(epoch=number, loss=float(match.group(2)))
            epochs[number] = record
            current = record.metrics
            last_epoch = record
            continue
        match = METRIC_RE.match(line)
        if match:
            if current is not None:
                k = int(match.group(1))
                current[k] = tuple(float(match.group(i)) for i in (2, 3, 4))
            continue
        if SAVE_RE.match(line):
            if last_epoch is not None:
                last_epoch.saved = True
            continue
        match = EARLY_STOP_RE.match(line)
        if match:
            best_epoch = int(match.group(1))
        elif BEST_CHECKPOINT_RE.search(line):
            best_epoch = int(BEST_CHECKPOINT_RE.search(line).group(1))
        if "Best Validation Results" in line:
            best_valid = {}
            current = best_valid
            last_epoch = None
            continue
        match = TRAIN_TIME_RE.match(line)
        if match:
            training_seconds = float(match.group(1))
            current = None
            continue
        if line.startswith("Final Test Results"):
            final_test = {}
            current = final_test
            last_epoch = None
            continue

    if not epochs:
        raise InputError(f"{path}: not a training log (no 'Epoch: N, Loss: X' lines)")
    records = [epochs[n] for n in sorted(epochs)]
    if best_epoch is None:
        # no early-stop line: the best checkpoint is the last one saved
        saved = [rec.epoch for rec in records if rec.saved]
        best_epoch = saved[-1] if saved else None
    if best_valid is None and best_epoch in epochs and epochs[best_epoch].metrics:
        best_valid = dict(epochs[best_epoch].metrics)
    top_k = parse_top_k(header["top_k"]) if "top_k" in header else []
    return ParsedLog(
        path=str(path),
        header=header,
        top_k=top_k,
        epochs=records,
        best_epoch=best_epoch,
        best_valid=best_valid or None,
        final_test=final_test or None,
        training_seconds=training_seconds,
    )


def resolve_log(argument):
    """A LOG argument: a file, or published:NAME / published-plus:NAME, the authors' ReFINe / ReFINe++
    log, fetched on first use into results4comparison/published/ and checked by sha256."""
    kind, colon, name = str(argument).partition(":")
    if colon and not Path(argument).exists():
        import download

        if kind in download.LOG_KINDS:
            return download.published_log_for(kind, name)
    return argument


def parse_log(path):
    """Read a ReFINe / ReFINe++ / main.py log into a ParsedLog.

    header: {name: value string} of the argument block; epochs: EpochRecord per evaluated epoch;
    best_epoch: from "Early stopping at epoch E" (upstream prints the best epoch there), else
    from a "best checkpoint (epoch E)" notice, else the last "Save:" epoch; final_test is None
    for an unfinished run. Raises InputError for a missing file or a file with no epoch lines.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: log file not found")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: cannot read log ({exc.strerror})") from exc
    return parse_log_text(text, path)


def check_k(runs, labels, k):
    """Raise InputError unless every run reports cut-off k."""
    for run, label in zip(runs, labels):
        available = run.available_k()
        if k not in available:
            raise InputError(
                f"{run.path}: k={k} not reported (top_k of {label}: {', '.join(map(str, available))})"
            )


def compare_rows(runs, labels, k):
    """Per run: best epoch, epochs run, final test metrics @k and differences to runs[0].

    Returns a list of dicts with keys label, best_epoch, epochs, seconds, and for each metric
    name m in METRIC_NAMES: m (value or None), m+"_abs" (run - ref), m+"_rel" ((run - ref) / ref,
    a fraction). Differences are None for the reference itself or when a value is missing.
    """
    reference = runs[0].final_test.get(k) if runs[0].final_test else None
    rows = []
    for index, (run, label) in enumerate(zip(runs, labels)):
        test = run.final_test.get(k) if run.final_test else None
        row = {
            "label": label,
            "best_epoch": run.best_epoch,
            "epochs": run.epochs[-1].epoch,
            "seconds": run.training_seconds,
        }
        for position, name in enumerate(METRIC_NAMES):
            value = test[position] if test else None
            ref_value = reference[position] if reference else None
            absolute = relative = None
            if index > 0 and value is not None and ref_value is not None:
                # logged values have 4 decimals; rounding keeps float noise out of the diff
                absolute = round(value - ref_value, 6)
                relative = absolute / ref_value if ref_value else None
            row[name] = value
            row[name + "_abs"] = absolute
            row[name + "_rel"] = relative
        rows.append(row)
    return rows


def _metric_cell(row, name):
    value = row[name]
    if value is None:
        return "-"
    cell = f"{value:.4f}"
    if row[name + "_abs"] is not None:
        cell += f" ({row[name + '_abs']:+.4f}"
        if row[name + "_rel"] is not None:
            cell += f", {100 * row[name + '_rel']:+.2f}%"
        cell += ")"
    return cell


def markdown_table(head, rows) -> str:
    """A markdown table: the first column left-aligned (names), the others right-aligned (numbers)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def format_table(rows, k, markdown=False):
    """Render compare_rows() output as an aligned text table or a markdown table."""
    columns = ["run", "best epoch", "epochs", f"Precision@{k}", f"Recall@{k}", f"NDCG@{k}", "train s"]
    body = []
    for row in rows:
        body.append(
            [
                row["label"],
                "-" if row["best_epoch"] is None else str(row["best_epoch"]),
                str(row["epochs"]),
                *(_metric_cell(row, name) for name in METRIC_NAMES),
                "-" if row["seconds"] is None else f"{row['seconds']:.0f}",
            ]
        )
    if markdown:
        return markdown_table(columns, body)
    widths = [max(len(r[i]) for r in [columns] + body) for i in range(len(columns))]
    lines = []
    for cells in [columns] + body:
        parts = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def curve_series(runs, labels, k):
    """{quantity: {label: (epochs, values)}} for validation Recall@k, NDCG@k and the loss."""
    series = {f"valid Recall@{k}": {}, f"valid NDCG@{k}": {}, "training loss": {}}
    for run, label in zip(runs, labels):
        evaluated = [rec for rec in run.epochs if k in rec.metrics]
        series[f"valid Recall@{k}"][label] = (
            [rec.epoch for rec in evaluated],
            [rec.metrics[k][1] for rec in evaluated],
        )
        series[f"valid NDCG@{k}"][label] = (
            [rec.epoch for rec in evaluated],
            [rec.metrics[k][2] for rec in evaluated],
        )
        series["training loss"][label] = (
            [rec.epoch for rec in run.epochs],
            [rec.loss for rec in run.epochs],
        )
    return series


def plot_curves(runs, labels, k, out_path=None):
    """Draw one subplot per quantity of curve_series(), one line per run; best epochs dotted.

    Returns (figure, series). Writes a PNG to out_path when given (atomically).
    """
    # Figure + Agg canvas directly: no pyplot global state, no display needed
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = curve_series(runs, labels, k)
    figure = Figure(figsize=(13, 3.8), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(series))
    for ax, (quantity, per_run) in zip(axes, series.items()):
        for run, (label, (xs, ys)) in zip(runs, per_run.items()):
            (line,) = ax.plot(xs, ys, label=label, linewidth=1.0)
            if run.best_epoch is not None:
                ax.axvline(run.best_epoch, color=line.get_color(), linestyle=":", linewidth=1.0)
        ax.set_title(quantity)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.suptitle("validation metrics and loss per epoch; dotted lines mark each run's best epoch",
                    fontsize="medium")
    if out_path is not None:
        with atomic_write(out_path, "wb") as handle:
            figure.savefig(handle, format="png")
    return figure, series


EPILOG = """examples:
  python compare.py results4comparison/ReFINe_ML-100K.out my_ML-100K.out --labels ours mine
  python compare.py a.out b.out c.out --k 10 --markdown --plot curves.png

LOG: main.py's log (its stdout, e.g. `python main.py ... > my_ML-100K.out`) or a published
results4comparison log. Output: the table on stdout, notes on stderr; --plot writes one PNG
(renamed into place when complete). Nothing else is written."""


def build_parser():
    parser = ArgumentParser(
        description="Compare ReFINe training logs: final test metrics against the first log, "
        "and learning curves.",
        formatter_class=HelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("logs", nargs="+", metavar="LOG", help="log files, or published:NAME / published-plus:NAME for "
                        "the authors' ReFINe / ReFINe++ log of dataset NAME (fetched once); the first is the reference")
    parser.add_argument("--labels", nargs="+", help="one name per log (default: the file names)")
    parser.add_argument("--k", type=int, default=20, help="cut-off of the compared metrics; every log must report it")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table instead of aligned text")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="write validation Recall@k, NDCG@k and loss per epoch to this PNG (default: no plot)")
    parser.add_argument("--runs", metavar="DIR",
                        help="a config folder of an experiments.py sweep (OUT/<config>, finished seeds): also print "
                             "its 95%% prediction interval of one run and where each log's final test falls in it "
                             "(default: none)")
    return parser


def seed_values(folder, k):
    """{metric: [value per finished seed]} at k from the run.test.json files of a sweep's config folder."""
    import json

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--runs {folder}: not a folder; give a config folder of a sweep (OUT/<config>)")
    values = {name: [] for name in METRIC_NAMES}
    for seed_folder in seed_folders(folder).values():
        path = RunPaths.in_sweep(seed_folder).test
        if not path.is_file():
            continue
        try:
            at_k = json.loads(path.read_text())["test"][str(k)]
            row = [float(at_k[name.lower()]) for name in METRIC_NAMES]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: cannot read test metrics at k = {k} ({exc}); rerun or delete that run") from None
        for name, value in zip(METRIC_NAMES, row):
            values[name].append(value)
    if len(values["Recall"]) < 2:
        raise InputError(f"--runs {folder}: {len(values['Recall'])} finished seed(s) (seed*/run.test.json); a "
                         f"prediction interval needs at least 2")
    return values


def prediction_lines(runs, labels, folder, k):
    """One line per metric and log: the log's final test value and where it falls in the 95% prediction
    interval of one run of the sweep config in `folder`."""
    from significance import prediction_interval

    values = seed_values(folder, k)
    lines = []
    for index, name in enumerate(METRIC_NAMES):
        low, high = prediction_interval(values[name])
        lines.append(f"{name}@{k}: 95% prediction interval of one run of {folder} ({len(values[name])} seeds): "
                     f"[{low:.4f}, {high:.4f}]")
        for run, label in zip(runs, labels):
            if run.final_test is None:
                continue
            value = run.final_test[k][index]
            where = "inside" if low <= value <= high else "below" if value < low else "above"
            lines.append(f"  {label}: {value:.4f}, {where}")
    return lines


def default_labels(paths):
    """File names without the final suffix; the full name where two stems collide."""
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [str(p) for p in paths]


def main(argv=None):
    args = build_parser().parse_args(argv)
    # The table goes to stdout as a whole; the PNG is written under a temporary name.
    stop = entry.Stop("no plot was written, nothing to resume: rerun the same command")
    return entry.run_script(lambda: run_compare(args), stop)


def run_compare(args) -> int:
    """The body of the command: check the flags, parse the logs, print the table, draw the plot."""
    if args.labels is not None and len(args.labels) != len(args.logs):
        raise InputError(f"--labels has {len(args.labels)} names for {len(args.logs)} logs")
    labels = args.labels or default_labels(args.logs)
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:  # one curve would hide the other under one legend entry, one row the other in the table
        raise InputError(f"--labels {', '.join(repeated)}: given to more than one log; give each log its own label"
                         if args.labels else f"{', '.join(repeated)}: the same log given twice; give it once")
    if args.plot is not None:
        if Path(args.plot).suffix.lower() != ".png":
            raise InputError(f"--plot {args.plot}: the file name must end in .png")
        check_output_path(args.plot, "--plot")
    runs = [parse_log(resolve_log(path)) for path in args.logs]
    check_k(runs, labels, args.k)
    predictions = prediction_lines(runs, labels, args.runs, args.k) if args.runs else []
    print(format_table(compare_rows(runs, labels, args.k), args.k, markdown=args.markdown))
    if predictions:
        print("\n" + "\n".join(predictions))
    for run, label in zip(runs, labels):
        if run.final_test is None:
            print(
                f"note: {label} ({run.path}) has no Final Test Results (unfinished run?); "
                f"shown as '-', last epoch {run.epochs[-1].epoch}",
                file=sys.stderr,
            )
    if args.plot is not None:
        plot_curves(runs, labels, args.k, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    entry.check_packages()
    entry.install_stop_handlers()
    sys.exit(main())
