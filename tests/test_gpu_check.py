"""bench/gpu_check.sh on a machine without CUDA: one line and exit code 3; its dry run on the CPU.

    python -m pytest -q tests/test_gpu_check.py            # the dry run is marked slow (about 4 minutes)
"""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT

STEPS = ["versions", "product", "syncs", "ml100k_run", "ml100k_result", "refine_plus_epoch", "ml1m_size_epoch",
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
    assert process.stderr == ""


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
    process = gpu_check(out, DRY_RUN="1")
    assert time.monotonic() - start < 300
    assert process.returncode in (0, 1), process.stderr  # 1: a step ran short of time on a busy machine
    entries = list(out.iterdir())
    assert len(entries) <= 8 and all(entry.is_file() for entry in entries)
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(process.stdout) == summary  # the summary is printed, and nothing after it
    assert summary["dry_run"] is True and list(summary["steps"]) == STEPS
    assert all(step["status"] in ("ok", "timed_out", "skipped") for step in summary["steps"].values())
    assert summary["steps"]["versions"]["status"] != "ok" or summary["steps"]["versions"]["result"]["torch"] == \
        torch.__version__
    if summary["steps"]["product"]["status"] == "ok":
        assert summary["steps"]["product"]["result"]["equal_to_1e-5"] is True
