"""SPADE normalisation and the SPADE residual block used in SDM's middle and decoder ("SDDResblock")."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ModulatedResidual, Resampling


class SPADEGroupNorm(nn.Module):
    """Parameter-free GroupNorm modulated by a label map: ``norm(x) · (1 + γ(y↓)) + β(y↓)``.

    ``y↓`` is the label map resized (nearest) to the feature size at every call; γ and β are
    ``conv3×3(ReLU(conv3×3(y↓)))``. The normalisation runs in float32.

    Args:
        channels: Feature width C (normalised with ``min(32, C)`` groups, no affine parameters).
        label_channels: Channels of the label map ``y``.
        hidden_channels: Width of the shared hidden conv.
    """

    def __init__(self, channels: int, label_channels: int, hidden_channels: int = 128) -> None:
        super().__init__()
        self.num_channels = channels
        self.num_groups = min(32, channels)
        self.label_conv = nn.Conv2d(label_channels, hidden_channels, 3, padding=1)
        self.gamma_conv = nn.Conv2d(hidden_channels, channels, 3, padding=1)
        self.beta_conv = nn.Conv2d(hidden_channels, channels, 3, padding=1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Normalise ``x`` (B, C, H, W) and modulate it with the label map ``y`` (B, L, H', W')."""
        normalized = F.group_norm(x.float(), self.num_groups).to(x.dtype)
        y = F.interpolate(y.to(x.dtype), size=x.shape[-2:], mode="nearest")
        hidden = F.relu(self.label_conv(y))
        return normalized * (1 + self.gamma_conv(hidden)) + self.beta_conv(hidden)


class SPADEResBlock(ModulatedResidual):
    """Residual block whose two normalisers are SPADE, followed by the timestep scale/shift (SDM's "SDDResblock").

    ``h = conv(resample(SiLU(SPADE_in(x, y))))``; ``h = SPADE_out(h, y) · (1 + scale) + shift``;
    ``h = zero_conv(dropout(SiLU(h)))``; output ``skip(resample(x)) + h``.

    Args:
        in_channels: Input width.
        out_channels: Output width (defaults to ``in_channels``).
        emb_channels: Width of the timestep embedding.
        label_channels: Channels of the label map.
        dropout: Dropout probability before the last conv.
        resample: ``"up"`` (nearest ×2), ``"down"`` (2×2 average pool) or ``"none"``.
        spade_hidden_channels: Hidden width of the SPADE convs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None,
        emb_channels: int,
        label_channels: int,
        *,
        dropout: float = 0.0,
        resample: Resampling = "none",
        spade_hidden_channels: int = 128,
    ) -> None:
        out_channels = out_channels or in_channels
        super().__init__(
            SPADEGroupNorm(in_channels, label_channels, spade_hidden_channels),
            SPADEGroupNorm(out_channels, label_channels, spade_hidden_channels),
            in_channels,
            out_channels,
            emb_channels,
            dropout,
            resample,
        )

    def forward(self, x: Tensor, emb: Tensor, y: Tensor) -> Tensor:
        """Apply the block to ``x`` with timestep embedding ``emb`` (B, E) and label map ``y`` (B, L, H', W')."""
        return self._residual(x, emb, y)
