"""run_files: a run's file names (published places), a sweep run's status, the seed folders.

    python -m pytest -q tests/test_run_files.py
"""
from pathlib import Path
from types import SimpleNamespace

import run_files
from run_files import RunPaths


def test_a_runs_files_are_the_published_names_and_places():
    published = RunPaths.of(SimpleNamespace(result_dir=None, dataset="ML-100K", path_name="nothing"))
    assert published.checkpoint == Path("result/ML-100K/nothing.pt")
    assert published.state == Path("result/ML-100K/nothing.last.pt")
    assert published.test == Path("result/ML-100K/nothing.test.json")
    assert published.test_users == Path("result/ML-100K/nothing.test_users.csv")
    assert published.log == Path("result/ML-100K/nothing.out")
    assert published.lock == Path("result/ML-100K/nothing.lock")
    assert published.not_early_stop == Path("result/ML-100K_not_early_stop.pt")  # beside result/<dataset>
    given = RunPaths.of(SimpleNamespace(result_dir="out/x", dataset="TOY", path_name="run"))
    assert given.not_early_stop == Path("out/x/TOY_not_early_stop.pt")  # inside a given --result_dir
    assert given == RunPaths.in_sweep("out/x", "TOY")
    assert RunPaths.in_sweep("out/x").stderr == Path("out/x/run.err")
    assert RunPaths.in_sweep("out/x").record == Path("out/x/run.json")
    assert RunPaths.in_sweep("out/x").not_early_stop is None
    assert len(set(published.outputs())) == 7


def test_a_sweep_runs_status_follows_its_files(tmp_path):
    folder = tmp_path / "refine" / "seed2024"
    assert run_files.run_status(folder) == "new"
    folder.mkdir(parents=True)
    (folder / "run.out").write_text("")
    assert run_files.run_status(folder) == "new"
    (folder / "run.last.pt").write_bytes(b"")
    assert run_files.run_status(folder) == "partial"
    (folder / "run.test.json").write_text("{}")
    assert run_files.run_status(folder) == "done"


def test_seed_folders_by_seed_number(tmp_path):
    for name in ("seed10", "seed9", "seed-1", "seedling", "seed2x"):
        (tmp_path / name).mkdir()
    assert run_files.seed_folder(tmp_path, "c", 9) == tmp_path / "c" / "seed9"
    assert list(run_files.seed_folders(tmp_path)) == [-1, 9, 10]
