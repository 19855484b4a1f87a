"""Spatial multi-head self-attention over a feature map."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import normalization, zero_module


class SelfAttention2d(nn.Module):
    """Residual self-attention over all H·W positions of a feature map.

    GroupNorm → 1×1 qkv projection → scaled dot-product attention (softmax(q·kᵀ/√d)·v) → zero-initialised 1×1
    output projection → residual add. The qkv channels are laid out as ``[q | k | v]``, each block head-major.

    Args:
        channels: Feature width C.
        num_heads: Number of heads (give exactly one of ``num_heads`` and ``head_channels``).
        head_channels: Width of each head; the head count is ``channels // head_channels``.
    """

    def __init__(self, channels: int, *, num_heads: int | None = None, head_channels: int | None = None) -> None:
        super().__init__()
        if (num_heads is None) == (head_channels is None):
            raise ValueError("give exactly one of num_heads and head_channels")
        if head_channels is not None:
            if head_channels <= 0 or channels % head_channels:
                raise ValueError(f"channels {channels} is not a multiple of head_channels {head_channels}")
            num_heads = channels // head_channels
        if num_heads <= 0 or channels % num_heads:
            raise ValueError(f"channels {channels} is not divisible into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Attend over the positions of ``x`` (B, C, H, W); returns the same shape."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))
        # (B, 3·C, T) -> three (B, heads, T, d) tensors
        q, k, v = qkv.reshape(b, 3, self.num_heads, c // self.num_heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h * w)
        return x + self.proj_out(out).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"
