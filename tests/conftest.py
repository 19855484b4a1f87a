"""Generic test fixtures shared by the whole suite."""

import os
from pathlib import Path

import pytest
import torch
from official_fixtures import SHIPPED_FIXTURES
from xdist_workers import auto_workers


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (setup.cfg): see tests/xdist_workers.py."""
    return auto_workers(config.args, os.cpu_count() or 1)


def pytest_configure(config) -> None:
    # Workers share the cores: each gets its share of torch threads instead of all of them. The processes a test
    # starts get the same share (OMP_NUM_THREADS), so a run in a subprocess computes bit for bit what the same run
    # in the worker does (tests/test_resume.py compares the two).
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Directory of the official conformance fixtures (``$CONDIFF_FIXTURES`` overrides the shipped copy)."""
    path = Path(os.environ.get("CONDIFF_FIXTURES", SHIPPED_FIXTURES))
    if not path.is_dir():
        pytest.fail(f"conformance fixtures not found at {path}; it should hold sdm_official/ and pidm_official/")
    return path
