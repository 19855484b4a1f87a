"""Offline fixtures for the metric tests: random weights written under the real file names, no network ever.

The files go through the same loading code as the real ones (strict loads, torchmetrics'
``feature_extractor_weights_path``); only their values are random.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import huggingface_hub.constants
import pytest
import torch
import torchvision

from lightning_modules import segmenter as segmenter_module
from lightning_modules.metrics.weights import WEIGHTS


def _no_network(*args, **kwargs):
    raise AssertionError("tests must never touch the network")


@pytest.fixture(autouse=True)
def forbid_downloads(monkeypatch, tmp_path):
    """Any download attempt fails the test (tests of the download path patch it themselves); the Hugging Face
    cache is an empty per-test folder."""
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(segmenter_module, "hf_hub_download", _no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))


def _write_fid_inception(path: Path) -> None:
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    # Build torch-fidelity's Inception without its download and strict load, then save it under the real name.
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in net.modules():  # default init collapses the features to ~0 and makes every FID ~1e-15
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)


def _write_torchvision(model: torch.nn.Module, path: Path, shrink_prefix: str | None = None) -> None:
    # Tensors the metric never uses are stored as stride-0 views: one element on disk, still strict-loadable.
    state = {name: torch.zeros(1).expand(value.shape) if shrink_prefix and name.startswith(shrink_prefix) else value
             for name, value in model.state_dict().items()}
    torch.save(state, path)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """A weights directory with random FID-Inception, AlexNet and GFLA-Inception files, set as CONDIFF_WEIGHTS.

    TORCH_HOME points at an empty folder, so no real cached weights are ever read.
    """
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    _write_fid_inception(root / WEIGHTS["fid_inception"].name)
    _write_torchvision(torchvision.models.alexnet(weights=None), root / WEIGHTS["lpips_alex"].name, "classifier")
    gfla = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    _write_torchvision(gfla, root / WEIGHTS["gfla_inception"].name, "fc")
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
