"""Test configuration: the repository root on sys.path and the location of ../shared.

The published splits and logs live in ../shared (or $REFINE_SHARED_DIR); tests that need them
skip cleanly when it is absent. All other tests build their own small synthetic data.
"""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED_DIR = Path(os.environ.get("REFINE_SHARED_DIR", ROOT.parent / "shared"))


@pytest.fixture
def shared_dir():
    """Path of ../shared; skips the test when it is not there."""
    if not (SHARED_DIR / "datasets").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DIR}")
    return SHARED_DIR
