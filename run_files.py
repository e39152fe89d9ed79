"""A run's files and a sweep's folder: their names, each run's status, and the sweep's manifest.

    python -c "import run_files; print(run_files.RunPaths.in_sweep('results/ML-100K/refine/seed2024'))"

A run of main.py writes <path_name>.<suffix> into result/<dataset>/, or into --result_dir (docs/training.md,
Outputs). A sweep (experiments.py) gives each run its own folder OUT/<config>/seed<S>/ and the path_name
"run", and keeps OUT/experiments.json, the manifest: the dataset and each config's main.py flags.
"""
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from utils import InputError, atomic_write

MANIFEST = "experiments.json"
SWEEP_PATH_NAME = "run"  # a sweep's runs are all called "run", each in its own folder


@dataclass(frozen=True)
class RunPaths:
    """The files of one run: <folder>/<name>.<suffix>, and the published not-early-stop file."""

    checkpoint: Path      # the best model
    state: Path           # the training state after the last finished epoch, for --resume
    test: Path            # the final test metrics (JSON); its presence marks a finished run
    test_users: Path      # each test user's metrics (CSV)
    log: Path             # what stdout shows
    lock: Path            # held while the run writes: one process per run
    stderr: Path          # a sweep's run: main.py's standard error
    record: Path          # a sweep's run: how it was started (JSON)
    not_early_stop: Path | None  # the last model, when early stopping did not trigger (None: not known)

    @classmethod
    def named(cls, folder, name: str, not_early_stop: Path | None) -> "RunPaths":
        folder = Path(folder)
        return cls(*(folder / f"{name}{suffix}" for suffix in (".pt", ".last.pt", ".test.json", ".test_users.csv",
                                                               ".out", ".lock", ".err", ".json")), not_early_stop)

    @classmethod
    def of(cls, args) -> "RunPaths":
        """The files of main.py's flags: --result_dir (or result/<dataset>), --path_name, --dataset."""
        folder = Path(args.result_dir) if args.result_dir else Path("result") / args.dataset
        # Published name and place, beside (not inside) result/<dataset>; inside a given --result_dir.
        not_early_stop = (folder if args.result_dir else Path("result")) / f"{args.dataset}_not_early_stop.pt"
        return cls.named(folder, args.path_name, not_early_stop)

    @classmethod
    def in_sweep(cls, folder, dataset: str | None = None) -> "RunPaths":
        """The files of a sweep's run in its folder (main.py ran with --result_dir folder --path_name run);
        the not-early-stop file's name needs the dataset."""
        return cls.named(folder, SWEEP_PATH_NAME,
                         None if dataset is None else Path(folder) / f"{dataset}_not_early_stop.pt")

    def outputs(self) -> list[Path]:
        """What main.py writes (the stderr and record files are the sweep's)."""
        return [self.checkpoint, self.state, self.test, self.test_users, self.log, self.lock, self.not_early_stop]


def run_status(folder) -> str:
    """A sweep's run in `folder`: "done" (its test file is there), "partial" (a training state to resume
    from), or "new"."""
    paths = RunPaths.in_sweep(folder)
    if paths.test.is_file():
        return "done"
    return "partial" if paths.state.is_file() else "new"


def seed_folder(out, config: str, seed: int) -> Path:
    return Path(out) / config / f"seed{seed}"


def seed_folders(config_folder) -> dict[int, Path]:
    """{seed: folder} of the seed<S> folders of a sweep's config folder, by seed."""
    found = {int(folder.name[len("seed"):]): folder for folder in Path(config_folder).glob("seed*")
             if re.fullmatch(r"seed-?\d+", folder.name)}
    return dict(sorted(found.items()))


def write_manifest(out: Path, manifest: dict) -> None:
    with atomic_write(out / MANIFEST) as handle:
        json.dump(manifest, handle, indent=1)


def merged_manifest(out: Path, dataset: str, configs) -> dict:
    """OUT's manifest with `configs` added; InputError for another dataset or a config name with other flags."""
    path = out / MANIFEST
    manifest = read_manifest(out) if path.exists() else {"dataset": dataset, "configs": []}
    if manifest["dataset"] != dataset:
        raise InputError(f"{path}: this folder holds a {manifest['dataset']} sweep; use another --out for {dataset}")
    known = {entry["name"]: entry["flags"] for entry in manifest["configs"]}
    for name, flags in configs:
        if name in known and known[name] != flags:
            raise InputError(f"{path}: config {name} ran with flags {shlex.join(known[name])!r}, now "
                             f"{shlex.join(flags)!r}; use another --out or another config name")
        if name not in known:
            manifest["configs"].append({"name": name, "flags": flags})
    return manifest


def read_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: no sweep manifest here; give the OUT folder of an experiments.py sweep")
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        manifest = None
    if not valid_manifest(manifest):
        raise InputError(f"{path}: not a valid sweep manifest (written by experiments.py)")
    return manifest


def valid_manifest(manifest) -> bool:
    """{"dataset": str, "configs": [{"name": str, "flags": [str, ...]}, ...]}, as write_manifest writes it."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("dataset"), str) \
            or not isinstance(manifest.get("configs"), list):
        return False
    return all(isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("flags"), list)
               and all(isinstance(flag, str) for flag in entry["flags"]) for entry in manifest["configs"])
