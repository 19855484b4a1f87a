"""Residual blocks with timestep scale/shift modulation (guided-diffusion style)."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import normalization, zero_module

Resampling = Literal["none", "up", "down"]


class Resample(nn.Module):
    """Parameter-free resampling: nearest ×2 (``"up"``), 2×2 average pooling (``"down"``) or identity (``"none"``).

    Args:
        mode: Which resampling to apply.
    """

    def __init__(self, mode: Resampling = "none") -> None:
        super().__init__()
        if mode not in ("none", "up", "down"):
            raise ValueError(f"resample must be 'none', 'up' or 'down', got {mode!r}")
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.mode == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class ModulatedResidual(nn.Module):
    """Skeleton shared by :class:`ResBlock` and the SPADE decoder block; the normalisers are supplied by subclasses.

    ``h = conv3x3(resample(SiLU(in_norm(x))))``; ``h = out_norm(h)``, then ``h * (1 + scale) + shift`` with
    ``(scale, shift) = Linear(SiLU(emb))`` when a timestep embedding is used; ``h = zero_conv3x3(dropout(SiLU(h)))``;
    output ``skip(resample(x)) + h`` with ``skip`` the identity or a 1×1 conv.

    Args:
        in_norm: Normaliser over ``in_channels`` (called as ``in_norm(x, *cond)``).
        out_norm: Normaliser over ``out_channels`` (called as ``out_norm(h, *cond)``).
        in_channels: Input width.
        out_channels: Output width.
        emb_channels: Width of the timestep embedding, or None for a block without timestep modulation.
        dropout: Dropout probability before the last conv.
        resample: Parameter-free up/down sampling applied to both paths.
    """

    def __init__(
        self,
        in_norm: nn.Module,
        out_norm: nn.Module,
        in_channels: int,
        out_channels: int,
        emb_channels: int | None,
        dropout: float,
        resample: Resampling,
    ) -> None:
        super().__init__()
        self.in_norm = in_norm
        self.resample = Resample(resample)
        self.in_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, 2 * out_channels) if emb_channels is not None else None
        self.out_norm = out_norm
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def _residual(self, x: Tensor, emb: Tensor | None, *cond: Tensor) -> Tensor:
        h = self.in_conv(self.resample(F.silu(self.in_norm(x, *cond))))
        x = self.resample(x)
        h = self.out_norm(h, *cond)
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError(f"{type(self).__name__} was built with emb_channels but called without emb")
            scale, shift = self.emb_proj(F.silu(emb)).to(h.dtype)[..., None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class ResBlock(ModulatedResidual):
    """Residual block with affine GroupNorm and optional timestep scale/shift (SDM's "SDEResblock").

    Args:
        in_channels: Input width.
        out_channels: Output width (defaults to ``in_channels``).
        emb_channels: Width of the timestep embedding; None builds a block without any embedding parameters.
        dropout: Dropout probability before the last (zero-initialised) conv.
        resample: ``"down"`` (2×2 average pool), ``"up"`` (nearest ×2) or ``"none"``, applied after the first
            norm + SiLU and to the skip input.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        emb_channels: int | None = None,
        *,
        dropout: float = 0.0,
        resample: Resampling = "none",
    ) -> None:
        out_channels = out_channels or in_channels
        super().__init__(
            normalization(in_channels),
            normalization(out_channels),
            in_channels,
            out_channels,
            emb_channels,
            dropout,
            resample,
        )

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        """Apply the block to ``x`` (B, C_in, H, W) with optional timestep embedding ``emb`` (B, emb_channels)."""
        return self._residual(x, emb)
