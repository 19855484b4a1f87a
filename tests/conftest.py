"""Generic test fixtures shared by the whole suite."""

import os
from pathlib import Path

import pytest

DEFAULT_FIXTURES = Path(__file__).parents[1].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Directory of the official conformance fixtures (``$CONDIFF_FIXTURES`` overrides the default)."""
    path = Path(os.environ.get("CONDIFF_FIXTURES", DEFAULT_FIXTURES))
    if not path.is_dir():
        pytest.fail(
            f"conformance fixtures not found at {path}; set CONDIFF_FIXTURES to the directory holding "
            "sdm_official/ and pidm_official/"
        )
    return path
