"""Helpers the test modules share, in one place (conftest.py holds only pytest's hooks and fixtures).

    from helpers import write_synthetic_dataset

The synthetic split writer lives in bench/toy.py (bench/host_syncs.py uses it too, without pytest).
"""
from bench.toy import write_synthetic_dataset  # noqa: F401  (the tests import it from here)
