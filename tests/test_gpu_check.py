"""bench/gpu_check.sh on a machine without CUDA: one line and exit code 3; its dry run on the CPU.

    python -m pytest -q tests/test_gpu_check.py            # the dry run is marked slow (about 4 minutes)
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from helpers import ROOT

STEPS = ["equivalence", "versions", "product", "syncs", "ml100k_run", "ml100k_result", "refine_plus_epoch", "ml1m_size_epoch",
         "throughput_1", "throughput_2"]


def gpu_check(out, **env):
    return subprocess.run(["bash", str(ROOT / "bench/gpu_check.sh")], capture_output=True, text=True, timeout=400,
                          env={**os.environ, "OUT": str(out), "PYTHON": sys.executable, **env})


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: the check would run")
def test_without_cuda_one_line_and_exit_3(tmp_path):
    start = time.monotonic()
    process = gpu_check(tmp_path / "out")
    assert time.monotonic() - start < 30
    assert process.returncode == 3
    assert process.stdout.count("\n") == 1 and process.stdout.startswith("gpu_check: no CUDA GPU")
    assert "is_available() is false" in process.stdout and f"torch {torch.__version__}" in process.stdout
    assert process.stderr == ""


def test_a_slow_torch_import_is_reported_as_slow_not_as_no_gpu(tmp_path):
    """Only torch.cuda.is_available() being false means no GPU; an import past IMPORT_LIMIT is slow (exit 4)."""
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    start = time.monotonic()
    process = gpu_check(tmp_path / "out", PYTHON=str(slow), IMPORT_LIMIT="2")
    assert time.monotonic() - start < 15
    assert process.returncode == 4
    assert process.stdout.count("\n") == 1 and "took more than 2 s to import torch: slow" in process.stdout
    assert "no CUDA GPU" not in process.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: the check would run")
def test_without_python_set_it_takes_the_repository_venv_else_python3(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHON"}
    process = subprocess.run(["bash", str(ROOT / "bench/gpu_check.sh")], capture_output=True, text=True, timeout=120,
                             env={**env, "OUT": str(tmp_path / "out")})
    expected = str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists() else "python3"
    assert process.stdout.startswith(f"gpu_check: no CUDA GPU usable by {expected}'s torch")


def test_the_step_caps_add_up_to_the_budget():
    """Every step's cap, the torch import's and the 10 s kept for the last summary: 480 s in all."""
    script = (ROOT / "bench/gpu_check.sh").read_text()
    caps = {name: int(cap) for name, cap in re.findall(r'^\s*step "?(\w+?)(?:_\$runs)?"? (\d+) \d+ ', script, re.M)}
    assert set(caps) == {"equivalence", "versions", "product", "syncs", "ml100k_run", "ml100k_result",
                         "refine_plus_epoch", "ml1m_size_epoch", "throughput"}
    import_limit = int(re.search(r"IMPORT_LIMIT=\$\{IMPORT_LIMIT:-(\d+)\}", script).group(1))
    runs = re.search(r'RUNS="([\d ]+)"\nfi', script).group(1).split()
    assert sum(caps.values()) + caps["throughput"] * (len(runs) - 1) + import_limit + 10 == 480
    assert re.search(r"^BUDGET=\$\{BUDGET:-480\}", script, re.M)


def test_an_unusable_tmpdir_is_one_line_and_nothing_is_written(tmp_path):
    """mktemp -d failing must not leave the temporary folders empty: the steps would write under /."""
    process = gpu_check(tmp_path / "out", DRY_RUN="1", TMPDIR=str(tmp_path / "nonexistent"))
    assert process.returncode == 2
    assert process.stderr.count("\n") == 1 and process.stderr.startswith("error: gpu_check: cannot make a temporary")
    assert process.stdout == "" and list(tmp_path.iterdir()) == []
    assert not os.path.exists("/order")


@pytest.mark.slow
def test_dry_run_writes_few_flat_files_and_prints_the_summary_last(tmp_path):
    out = tmp_path / "out"
    start = time.monotonic()
    # No step may need pytest: a pytest that cannot be imported stands in front of the real one.
    (tmp_path / "no_pytest").mkdir()
    (tmp_path / "no_pytest" / "pytest.py").write_text("raise ImportError('no step may need pytest')\n")
    process = gpu_check(out, DRY_RUN="1", PYTHONPATH=str(tmp_path / "no_pytest"))
    assert time.monotonic() - start < 300
    assert process.returncode in (0, 1), process.stderr  # 1: a step ran short of time on a busy machine
    entries = list(out.iterdir())
    assert len(entries) <= 8 and all(entry.is_file() for entry in entries)
    summary = json.loads((out / "summary.json").read_text())
    first, printed = process.stdout.split("\n", 1)  # the machine's line first, then the summary and nothing after
    assert first.startswith("gpu_check: python ") and f"torch {torch.__version__}" in first
    assert "torch_geometric " in first and "driver " in first and "GPU " in first
    assert json.loads(printed) == summary
    assert summary["dry_run"] is True and list(summary["steps"]) == STEPS
    assert all(step["status"] in ("ok", "timed_out", "skipped") for step in summary["steps"].values())
    assert summary["steps"]["versions"]["status"] != "ok" or summary["steps"]["versions"]["result"]["torch"] == \
        torch.__version__
    assert summary["steps"]["equivalence"]["status"] != "ok" or summary["steps"]["equivalence"]["result"]["equal"]
    if summary["steps"]["product"]["status"] == "ok":
        assert summary["steps"]["product"]["result"]["equal_to_1e-5"] is True
