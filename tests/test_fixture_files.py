"""The shipped conformance fixtures hold the official values: the one storage transformation is lossless."""

import os
from pathlib import Path

import pytest
import torch
from official_fixtures import SHIPPED_FIXTURES, load_official_fixture

# The files as the official code wrote them, where a checkout has them (the development machines keep a copy).
ORIGINALS = Path(os.environ.get("CONDIFF_ORIGINAL_FIXTURES", Path(__file__).parents[2] / "shared" / "fixtures"))
SHIPPED_FILES = sorted(path.relative_to(SHIPPED_FIXTURES) for path in SHIPPED_FIXTURES.rglob("*.pt"))


def assert_identical(decoded, original, where: str) -> None:
    if isinstance(original, torch.Tensor):
        assert decoded.dtype == original.dtype and torch.equal(decoded, original), where
    elif isinstance(original, dict):
        assert decoded.keys() == original.keys(), where
        for key in original:
            assert_identical(decoded[key], original[key], f"{where}[{key!r}]")
    else:
        assert len(decoded) == len(original), where
        for index, (left, right) in enumerate(zip(decoded, original)):
            assert_identical(left, right, f"{where}[{index}]")


def test_every_fixture_file_is_shipped():
    assert {str(path) for path in SHIPPED_FILES} == {
        "sdm_official/io.pt", "sdm_official/diffusion.pt", "sdm_official/state_dict.pt",
        "pidm_official/io.pt", "pidm_official/diffusion.pt", "pidm_official/pose.pt", "pidm_official/state_dict.pt",
    }  # fmt: skip


@pytest.mark.skipif(not ORIGINALS.is_dir(), reason=f"original fixture files not at {ORIGINALS} "
                    "(set CONDIFF_ORIGINAL_FIXTURES to compare the shipped copies with them)")
@pytest.mark.parametrize("relative", SHIPPED_FILES, ids=str)
def test_shipped_fixture_decodes_to_the_original_bit_for_bit(relative):
    original = torch.load(ORIGINALS / relative, map_location="cpu", weights_only=True)
    assert_identical(load_official_fixture(SHIPPED_FIXTURES / relative), original, str(relative))
