"""Loaders of the official SDM/PIDM conformance fixtures used by the diffusion tests."""

from pathlib import Path

import pytest
from official_fixtures import load_official_fixture


def _load(fixtures_dir: Path, name: str) -> dict:
    return load_official_fixture(fixtures_dir / name)


@pytest.fixture(scope="session")
def sdm_io(fixtures_dir: Path) -> dict:
    return _load(fixtures_dir, "sdm_official/io.pt")


@pytest.fixture(scope="session")
def sdm_diffusion(fixtures_dir: Path) -> dict:
    return _load(fixtures_dir, "sdm_official/diffusion.pt")


@pytest.fixture(scope="session")
def pidm_io(fixtures_dir: Path) -> dict:
    return _load(fixtures_dir, "pidm_official/io.pt")


@pytest.fixture(scope="session")
def pidm_diffusion(fixtures_dir: Path) -> dict:
    return _load(fixtures_dir, "pidm_official/diffusion.pt")
