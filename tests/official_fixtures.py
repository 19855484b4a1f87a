"""Loading the official SDM/PIDM conformance fixtures shipped in ``tests/fixtures/official`` (see its README)."""

from pathlib import Path

import pytest
import torch

SHIPPED_FIXTURES = Path(__file__).parent / "fixtures" / "official"


def decode_fixture_tensors(value):
    """Fixture tensors stored as uint8 hold multiples of 1/255 (see tests/fixtures/official/README.md)."""
    if isinstance(value, torch.Tensor) and value.dtype == torch.uint8:
        return value.float() / 255
    if isinstance(value, dict):
        return {key: decode_fixture_tensors(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_fixture_tensors(item) for item in value]
    return value


def load_official_fixture(path: Path):
    """One fixture file as the official code wrote it; a missing file fails the test naming it."""
    if not path.is_file():
        pytest.fail(f"conformance fixture {path} is missing")
    return decode_fixture_tensors(torch.load(path, map_location="cpu", weights_only=True))
