"""Generic test fixtures shared by the whole suite."""

import os
from pathlib import Path

import pytest
from official_fixtures import SHIPPED_FIXTURES


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Directory of the official conformance fixtures (``$CONDIFF_FIXTURES`` overrides the shipped copy)."""
    path = Path(os.environ.get("CONDIFF_FIXTURES", SHIPPED_FIXTURES))
    if not path.is_dir():
        pytest.fail(f"conformance fixtures not found at {path}; it should hold sdm_official/ and pidm_official/")
    return path
