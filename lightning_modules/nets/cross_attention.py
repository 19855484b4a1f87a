"""PIDM's texture diffusion block (TDB): cross-attention from noise-predictor features to texture features."""

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import normalization, zero_module


class TextureCrossAttention(nn.Module):
    """Cross-attention from a feature map to a texture-encoder feature map, added residually.

    q = to_q(GN(h)), [k; v] = to_kv(f) with the texture features f NOT normalised (as the official PIDM), scaled
    dot-product attention over the spatial positions, then a zero-initialised output projection and a residual add,
    so a freshly built block is the identity.

    Args:
        channels: Channels C of both the query map and the texture map.
        num_heads: Attention heads; C must be divisible by it. The official PIDM uses 1 head (width C).
    """

    def __init__(self, channels: int, num_heads: int = 1) -> None:
        super().__init__()
        if num_heads < 1 or channels % num_heads:
            raise ValueError(f"channels ({channels}) must be a positive multiple of num_heads ({num_heads})")
        self.channels = channels
        self.num_heads = num_heads
        self.norm = normalization(channels)
        self.to_q = nn.Conv1d(channels, channels, 1)
        self.to_kv = nn.Conv1d(channels, 2 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def _split_heads(self, x: Tensor) -> Tensor:
        # (B, C, N) -> (B, heads, N, C / heads); heads are contiguous channel groups of q, k and v alike.
        return x.unflatten(1, (self.num_heads, -1)).transpose(-1, -2)

    def forward(self, h: Tensor, texture: Tensor) -> Tensor:
        """Attend from ``h`` (B, C, *spatial) to ``texture`` (B, C, *spatial'); returns a tensor shaped like ``h``."""
        if texture.shape[:2] != h.shape[:2]:
            raise ValueError(
                f"texture features of shape {tuple(texture.shape)} do not match the query batch and channels "
                f"{tuple(h.shape[:2])}"
            )
        x = h.flatten(2)
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(texture.flatten(2)).chunk(2, dim=1)
        out = F.scaled_dot_product_attention(self._split_heads(q), self._split_heads(k), self._split_heads(v))
        out = out.transpose(-1, -2).flatten(1, 2)
        return h + self.proj_out(out).view_as(h)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_heads={self.num_heads}"
