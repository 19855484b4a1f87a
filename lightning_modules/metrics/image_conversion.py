"""Image preparation shared by the metric protocols: PNG-like uint8 rounding and protocol resizes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

RESIZE_MODES = ("bilinear", "bicubic", "area", "nearest")


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] rounded to uint8 the way saving a PNG does (round, not floor)."""
    return ((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def resize_uint8(images: Tensor, size: Sequence[int] | None, mode: str = "bilinear") -> Tensor:
    """uint8 images resized to ``size`` = (H, W) in float and rounded back; unchanged when ``size`` is None.

    ``bilinear`` is ``F.interpolate(align_corners=False)`` without antialiasing, which samples like OpenCV's
    ``INTER_LINEAR`` (PIDM's cv2 resize to 176x256).
    """
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return images
    if mode not in RESIZE_MODES:
        raise ValueError(f"Unknown resize mode {mode!r}; choose one of {RESIZE_MODES}")
    align = False if mode in ("bilinear", "bicubic") else None
    resized = F.interpolate(images.float(), size=tuple(size), mode=mode, align_corners=align)
    return resized.round().clamp(0, 255).to(torch.uint8)


def uint8_to_unit(images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 images as floats in [0, 1]."""
    return images.to(dtype) / 255.0


def uint8_to_signed(images: Tensor) -> Tensor:
    """uint8 images as float32 in [-1, 1] (the DataModules' image range)."""
    return images.float() / 127.5 - 1.0


def png_rounded(images: Tensor) -> Tensor:
    """Images in [-1, 1] as they read back after saving them as PNGs (rounded to 8 bits), float32 in [-1, 1]."""
    return uint8_to_signed(to_uint8(images))
