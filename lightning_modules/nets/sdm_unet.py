"""SDM denoiser: a guided-diffusion UNet whose middle and decoder blocks read the label map through SPADE.

The encoder never sees the label map; every middle and decoder residual block (including the up-sampling ones) is
a :class:`~lightning_modules.nets.spade.SPADEResBlock`. Block order, widths and attention placement follow the
official SDM code (``guided_diffusion/unet.py``), so official checkpoints map onto it one to one
(see :mod:`lightning_modules.official.sdm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import SelfAttention2d
from .blocks import ResBlock
from .layers import normalization, regroup_normalization, run_block, run_in_float32, timestep_embedding, zero_module
from .spade import SPADEResBlock


class Downsample(nn.Module):
    """Stride-2 3×3 conv, the encoder down-sampling step when ``resblock_updown`` is off.

    Args:
        channels: Feature width (unchanged).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        """Halve the resolution of ``x``; ``emb`` is accepted for the encoder's block interface and ignored."""
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest ×2 followed by a 3×3 conv, the decoder up-sampling step when ``resblock_updown`` is off.

    Args:
        channels: Feature width (unchanged).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        """Double the resolution of ``x``; ``emb`` and ``y`` are accepted for the decoder's interface and ignored."""
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class EncoderBlock(nn.Module):
    """One encoder entry: a residual (or down-sampling) block, optionally followed by self-attention.

    Args:
        res: ``ResBlock`` (optionally down-sampling) or :class:`Downsample`.
        attn: Self-attention applied after ``res``, or None.
    """

    def __init__(self, res: nn.Module, attn: SelfAttention2d | None = None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        h = self.res(h, emb)
        return self.attn(h) if self.attn is not None else h


class MiddleBlock(nn.Module):
    """SPADE block → self-attention → SPADE block at the lowest resolution.

    Args:
        res_in: First SPADE residual block.
        attn: Self-attention between the two.
        res_out: Second SPADE residual block.
    """

    def __init__(self, res_in: SPADEResBlock, attn: SelfAttention2d, res_out: SPADEResBlock) -> None:
        super().__init__()
        self.res_in = res_in
        self.attn = attn
        self.res_out = res_out

    def forward(self, h: Tensor, emb: Tensor, y: Tensor) -> Tensor:
        return self.res_out(self.attn(self.res_in(h, emb, y)), emb, y)


class DecoderBlock(nn.Module):
    """One decoder entry: SPADE block on ``[h, skip]``, optional attention, optional up-sampling block.

    Args:
        res: SPADE residual block.
        attn: Self-attention after ``res``, or None.
        upsample: Up-sampling SPADE block (or :class:`Upsample`) closing a resolution level, or None.
    """

    def __init__(self, res: SPADEResBlock, attn: SelfAttention2d | None, upsample: nn.Module | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn
        self.upsample = upsample

    def forward(self, h: Tensor, emb: Tensor, y: Tensor) -> Tensor:
        h = self.res(h, emb, y)
        if self.attn is not None:
            h = self.attn(h)
        if self.upsample is not None:
            h = self.upsample(h, emb, y)
        return h


@dataclass(frozen=True)
class SDMUNetConfig:
    """The architecture of an :class:`SDMUNet`; the label channels come from the data and the output channels from
    the diffusion's variance.

    Args:
        image_channels: Channels of the noisy image.
        model_channels: Base width; level ``i`` has width ``channel_mult[i] * model_channels``.
        channel_mult: Width multiplier per resolution level (one down-sampling between consecutive levels).
        num_res_blocks: Residual blocks per encoder level (the decoder has one more per level).
        attention_resolutions: Feature resolutions with self-attention, converted to downsample factors
            ``image_size // r`` (so placement depends on ``image_size``, not on the actual input size).
        image_size: Nominal training resolution, used only to place attention.
        num_heads: Heads per attention block in the encoder and middle (used when ``num_head_channels`` is -1).
        num_head_channels: Width per head; -1 to use head counts instead.
        num_heads_upsample: Heads in decoder attention when ``num_head_channels`` is -1 (-1: same as ``num_heads``).
        dropout: Dropout probability inside residual blocks.
        resblock_updown: Down/up-sample with residual blocks (parameter-free resampling inside) instead of a
            strided conv / nearest + conv.
        spade_hidden_channels: Hidden width of every SPADE modulation network.
        gradient_checkpointing: Recompute block activations in the backward pass to save memory.
        norm_channels_per_group: Channels per GroupNorm group (None: the official ``min(32, C)`` groups, which
            at 32 channels normalise each channel alone and hide per-image mean colours; 4 suits small networks).
    """

    image_channels: int = 3
    model_channels: int = 256
    channel_mult: tuple[float, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    image_size: int = 256
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    dropout: float = 0.0
    resblock_updown: bool = True
    spade_hidden_channels: int = 128
    gradient_checkpointing: bool = False
    norm_channels_per_group: int | None = None


class SDMUNet(nn.Module):
    """Semantic-diffusion UNet (SDM): ε and variance prediction conditioned on timestep and label map.

    Args:
        label_channels: Channels of the label tensor ``y`` (classes, plus 1 when an instance-edge channel is used;
            see :func:`lightning_modules.conditioning.condition_channels`).
        config: The architecture.
        learn_sigma: Predict the variance interpolant too (output ``2 * image_channels`` channels).
    """

    def __init__(
        self, label_channels: int, config: SDMUNetConfig = SDMUNetConfig(), learn_sigma: bool = True
    ) -> None:
        super().__init__()
        self.config = config
        if not config.channel_mult:
            raise ValueError("channel_mult must name at least one level")
        self.label_channels = label_channels
        self.model_channels = config.model_channels
        self.num_levels = len(config.channel_mult)
        self.gradient_checkpointing = config.gradient_checkpointing
        attention_factors = {config.image_size // r for r in config.attention_resolutions}
        emb_channels = 4 * config.model_channels
        widths = [int(m * config.model_channels) for m in config.channel_mult]
        decoder_heads = config.num_heads if config.num_heads_upsample == -1 else config.num_heads_upsample

        def attention(channels: int, heads: int) -> SelfAttention2d:
            if config.num_head_channels == -1:
                return SelfAttention2d(channels, num_heads=heads)
            return SelfAttention2d(channels, head_channels=config.num_head_channels)

        def spade_block(cin: int, cout: int, resample: str = "none") -> SPADEResBlock:
            return SPADEResBlock(
                cin, cout, emb_channels, label_channels,
                dropout=config.dropout, resample=resample, spade_hidden_channels=config.spade_hidden_channels,
            )  # fmt: skip

        self.time_embed = nn.Sequential(
            nn.Linear(config.model_channels, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels)
        )
        self.input_conv = nn.Conv2d(config.image_channels, widths[0], 3, padding=1)

        self.encoder = nn.ModuleList()
        skip_widths = [widths[0]]
        ch, factor = widths[0], 1
        for level, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                res = ResBlock(ch, width, emb_channels, dropout=config.dropout)
                ch = width
                attn = attention(ch, config.num_heads) if factor in attention_factors else None
                self.encoder.append(EncoderBlock(res, attn))
                skip_widths.append(ch)
            if level != self.num_levels - 1:
                down = (
                    ResBlock(ch, ch, emb_channels, dropout=config.dropout, resample="down")
                    if config.resblock_updown
                    else Downsample(ch)
                )
                self.encoder.append(EncoderBlock(down))
                skip_widths.append(ch)
                factor *= 2

        self.middle = MiddleBlock(spade_block(ch, ch), attention(ch, config.num_heads), spade_block(ch, ch))

        self.decoder = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            for i in range(config.num_res_blocks + 1):
                res = spade_block(ch + skip_widths.pop(), widths[level])
                ch = widths[level]
                attn = attention(ch, decoder_heads) if factor in attention_factors else None
                upsample = None
                if level and i == config.num_res_blocks:
                    upsample = spade_block(ch, ch, "up") if config.resblock_updown else Upsample(ch)
                    factor //= 2
                self.decoder.append(DecoderBlock(res, attn, upsample))

        out_channels = 2 * config.image_channels if learn_sigma else config.image_channels
        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, out_channels, 3, padding=1))
        )
        if config.norm_channels_per_group is not None:
            regroup_normalization(self, config.norm_channels_per_group)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Predict ``[ε | v]`` (or ``ε``) for noisy images.

        Args:
            x: Noisy images (B, image_channels, H, W); H and W must be divisible by ``2 ** (levels - 1)``.
            t: Timestep indices (B,), fed raw to the sinusoidal embedding.
            y: Label tensor (B, label_channels, H', W'), resized (nearest) to each SPADE block's resolution.

        Returns:
            (B, 2 * image_channels or image_channels, H, W).
        """
        stride = 2 ** (self.num_levels - 1)
        if x.shape[-2] % stride or x.shape[-1] % stride:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} is not divisible by {stride} ({self.num_levels} levels)"
            )
        if y.shape[1] != self.label_channels:
            raise ValueError(f"label tensor has {y.shape[1]} channels, the network expects {self.label_channels}")
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        h = self.input_conv(x)
        skips = [h]
        for block in self.encoder:
            h = run_block(block, h, emb, checkpointed=self.gradient_checkpointing)
            skips.append(h)
        h = run_block(self.middle, h, emb, y, checkpointed=self.gradient_checkpointing)
        for block in self.decoder:
            h = run_block(block, torch.cat([h, skips.pop()], dim=1), emb, y, checkpointed=self.gradient_checkpointing)
        return run_in_float32(self.out, h)
