"""Offline fixtures for the metric tests: random weights written under the real file names, no network ever.

The files go through the same loading code as the real ones (strict loads, torchmetrics'
``feature_extractor_weights_path``); only their values are random.
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from offline_weights import write_all_weights

from lightning_modules import segmenter as segmenter_module


def _no_network(*args, **kwargs):
    raise AssertionError("tests must never touch the network")


@pytest.fixture(autouse=True)
def forbid_downloads(monkeypatch, tmp_path):
    """Any download attempt fails the test (tests of the download path patch it themselves); the Hugging Face
    cache is an empty per-test folder."""
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(segmenter_module, "hf_hub_download", _no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """A weights directory with random FID-Inception, AlexNet and GFLA-Inception files, set as CONDIFF_WEIGHTS.

    TORCH_HOME points at an empty folder, so no real cached weights are ever read.
    """
    root = write_all_weights(tmp_path_factory.mktemp("weights"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONDIFF_WEIGHTS", str(root))
        patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
        patch.delenv("CONDIFF_OFFLINE", raising=False)
        yield root


@pytest.fixture(scope="session")
def make_images():
    """``make_images(count, size=32, seed=0)``: smooth random images in [-1, 1] (upsampled noise)."""

    def make(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        coarse = torch.rand(count, 3, size // 4, size // 4, generator=generator) * 2 - 1
        return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    return make
