"""LPIPS with the backbone loaded strictly from the weights directory, in two protocols.

- reconstruction (PIDM): LPIPS(generated, ground truth) per image.
- diversity (SDM): mean LPIPS over all N(N-1)/2 pairs of N samples generated for the same label map.

The linear heads are the LPIPS v0.1 heads shipped inside the ``lpips`` wheel (byte-identical to torchmetrics'
copies). The torchvision backbone is built empty and loaded strictly from
:func:`~lightning_modules.metrics.weights.resolve_weights`, so no hidden torch-hub download happens.
"""

from __future__ import annotations

import itertools
import os
import warnings

import lpips
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from lightning_modules.metrics.weights import resolve_weights

LPIPS_BACKBONES = {"alex": ("lpips_alex", torchvision.models.alexnet), "vgg": ("lpips_vgg", torchvision.models.vgg16)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STARGAN_V2_SIZE = 299

# The smallest image side each LPIPS backbone accepts: below it a pooling layer of its deepest stage gets no input.
LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16}


def build_lpips(net: str = "alex", weights_dir: str | os.PathLike | None = None, offline: bool = False) -> lpips.LPIPS:
    """A frozen ``lpips.LPIPS`` (v0.1 heads) whose backbone comes from the weights directory.

    Args:
        net: ``"alex"`` or ``"vgg"``.
        weights_dir: Weights folder (see :mod:`lightning_modules.metrics.weights`).
        offline: Never download the backbone.
    """
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"Unknown LPIPS net {net!r}; choose one of {sorted(LPIPS_BACKBONES)}")
    key, factory = LPIPS_BACKBONES[net]
    path = resolve_weights(key, weights_dir, offline)
    backbone = factory(weights=None)
    backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    with warnings.catch_warnings():  # lpips builds its empty backbone with torchvision's deprecated `pretrained=`
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    # lpips splits `features` into slices whose children keep their torchvision indices: slice2.3.weight is
    # features.3.weight.
    features = backbone.features.state_dict()
    model.net.load_state_dict({name: features[name.split(".", 1)[1]] for name in model.net.state_dict()})
    return model.eval().requires_grad_(False)


def stargan_v2_inputs(images: Tensor) -> Tensor:
    """SDM's (StarGAN v2's) LPIPS input: resized to 299x299 and ImageNet-normalised; LPIPS' own scaling follows.

    Args:
        images: ``(N, 3, H, W)`` in [-1, 1].
    """
    x = F.interpolate((images.float() + 1.0) / 2.0, size=(STARGAN_V2_SIZE, STARGAN_V2_SIZE), mode="bilinear",
                      align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def lpips_diversity(model: lpips.LPIPS, samples: Tensor) -> Tensor:
    """Mean pairwise LPIPS among the samples generated for each condition.

    Args:
        model: From :func:`build_lpips`.
        samples: ``(K, B, 3, H, W)``: K >= 2 samples for each of B conditions, as LPIPS expects them.

    Returns:
        ``(B,)`` mean over the K(K-1)/2 pairs.
    """
    num_samples = samples.shape[0]
    if samples.dim() != 5 or num_samples < 2:
        raise ValueError(f"LPIPS diversity needs samples shaped (K>=2, B, 3, H, W), got {tuple(samples.shape)}")
    pairs = itertools.combinations(range(num_samples), 2)
    distances = [model(samples[i], samples[j]).flatten() for i, j in pairs]
    return torch.stack(distances).mean(dim=0)
