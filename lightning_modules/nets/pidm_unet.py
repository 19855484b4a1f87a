"""PIDM's networks: the texture encoder H_E and the noise predictor H_N with texture diffusion blocks (TDBs).

Both share one encoder layout: an input conv (block 0), then per level ``num_res_blocks`` ResBlocks followed, on every
level but the last, by a down-sampling ResBlock. H_E returns the output of every block F[0..N-1]; H_N's TDBs attend
to the feature of the same shape (the official indexing): an encoder-path TDB after block k uses F[k], the middle
TDB uses F[N-1], and a decoder-path TDB in decoder block j uses F[N-1-j] (the block its skip connection comes from).
Unlike the official code there are no dead parameters (no second-condition layers, no self-attention weights, no
time modulation or time embedding in H_E), so every parameter is trained by the diffusion loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .blocks import ResBlock
from .cross_attention import TextureCrossAttention
from .layers import normalization, regroup_normalization, run_block, run_in_float32, timestep_embedding, zero_module


class EncoderBlockSpec(NamedTuple):
    """One ResBlock of the shared encoder layout (blocks 1..N-1; block 0 is the input conv)."""

    level: int
    in_channels: int
    out_channels: int
    resample: str
    last_of_level: bool


def encoder_layout(model_channels: int, channel_mult: Sequence[int], num_res_blocks: int) -> list[EncoderBlockSpec]:
    """The ResBlocks of the encoder path, in order (PIDM's input-block layout without the input conv)."""
    if not channel_mult or num_res_blocks < 1:
        raise ValueError(f"need at least one level and one res block, got {channel_mult=} and {num_res_blocks=}")
    specs = []
    ch = int(channel_mult[0] * model_channels)
    for level, mult in enumerate(channel_mult):
        width = int(mult * model_channels)
        for i in range(num_res_blocks):
            specs.append(EncoderBlockSpec(level, ch, width, "none", i == num_res_blocks - 1))
            ch = width
        if level != len(channel_mult) - 1:
            specs.append(EncoderBlockSpec(level + 1, ch, ch, "down", False))
    return specs


class TextureEncoder(nn.Module):
    """PIDM's texture encoder H_E: the noise predictor's encoder path without timestep, attention or middle block.

    Args:
        in_channels: Channels of the source image.
        model_channels: Base width; level ``i`` has width ``channel_mult[i] * model_channels``.
        channel_mult: Width multiplier per resolution level.
        num_res_blocks: ResBlocks per level (plus one down-sampling ResBlock between levels).
        dropout: Dropout probability inside the ResBlocks.
        gradient_checkpointing: Recompute block activations in the backward pass to save memory.
    """

    def __init__(
        self,
        in_channels: int = 3,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4),
        num_res_blocks: int = 2,
        dropout: float = 0.0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        layout = encoder_layout(model_channels, channel_mult, num_res_blocks)
        self.gradient_checkpointing = gradient_checkpointing
        self.input_conv = nn.Conv2d(in_channels, layout[0].in_channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            ResBlock(s.in_channels, s.out_channels, dropout=dropout, resample=s.resample) for s in layout
        )
        self.feature_channels = [layout[0].in_channels] + [s.out_channels for s in layout]

    def forward(self, source: Tensor, keep: Sequence[int] | None = None) -> list[Tensor]:
        """Encode ``source`` (B, in_channels, H, W).

        Args:
            source: Source images.
            keep: Indices of the block outputs to return, in this order; None returns all N of them.

        Returns:
            The requested block outputs F[k] (B, C_k, H / 2^level, W / 2^level); F[0] is the input conv's output.
        """
        h = self.input_conv(source)
        features = [h]
        for block in self.blocks:
            h = run_block(block, h, checkpointed=self.gradient_checkpointing)
            features.append(h)
        return features if keep is None else [features[k] for k in keep]


class TexturedBlock(nn.Module):
    """A noise-predictor stage: ResBlock, an optional TDB, and an optional trailing ResBlock.

    The trailing ResBlock is a decoder level's up-sampling block or the middle block's second ResBlock.

    Args:
        res: The main ResBlock.
        cross_attn: Texture diffusion block after ``res``, or None.
        texture_index: Index k of the texture-encoder feature F[k] that ``cross_attn`` attends to.
        tail: ResBlock applied last, or None.
    """

    def __init__(
        self,
        res: ResBlock,
        cross_attn: TextureCrossAttention | None = None,
        texture_index: int | None = None,
        tail: ResBlock | None = None,
    ) -> None:
        super().__init__()
        if (cross_attn is None) != (texture_index is None):
            raise ValueError("a texture index is needed exactly when the block has a TDB")
        self.res = res
        self.cross_attn = cross_attn
        self.texture_index = texture_index
        self.tail = tail

    def forward(self, h: Tensor, emb: Tensor, texture: Tensor | None = None) -> Tensor:
        h = self.res(h, emb)
        if self.cross_attn is not None:
            h = self.cross_attn(h, texture)
        if self.tail is not None:
            h = self.tail(h, emb)
        return h


@dataclass(frozen=True)
class PIDMUNetConfig:
    """The architecture of a :class:`PIDMUNet`; the pose channels come from the data and the output channels from
    the diffusion's variance.

    Args:
        image_channels: Channels of the target and source images.
        model_channels: Base width; level ``i`` has width ``channel_mult[i] * model_channels``.
        channel_mult: Width multiplier per resolution level (one down-sampling between consecutive levels).
        num_res_blocks: ResBlocks per encoder level (the decoder has one more per level).
        attention_resolutions: Feature resolutions (at ``image_size``) whose levels get TDBs.
        image_size: Nominal training resolution, used only to place the TDBs.
        embed_channels: Width of the timestep embedding MLP.
        dropout: Dropout probability inside all ResBlocks (noise predictor and texture encoder).
        num_heads: Heads of every TDB (the official model uses 1).
        gradient_checkpointing: Recompute block activations in the backward pass to save memory.
        norm_channels_per_group: Channels per GroupNorm group (None: the official ``min(32, C)`` groups, which
            at 32 channels normalise each channel alone and hide per-image mean colours; 4 suits small networks).
    """

    image_channels: int = 3
    model_channels: int = 128
    channel_mult: tuple[float, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    image_size: int = 256
    embed_channels: int = 512
    dropout: float = 0.0
    num_heads: int = 1
    gradient_checkpointing: bool = False
    norm_channels_per_group: int | None = None


class PIDMUNet(nn.Module):
    """PIDM noise predictor H_N with its texture encoder H_E: predicts ``[ε | v]`` of the noisy target.

    The noisy target is concatenated with the target pose; the source image reaches the network only through the
    texture encoder and the TDBs. TDBs follow the last ResBlock of each encoder level and ResBlock
    ``num_res_blocks - 1`` of each decoder level whose resolution is in ``attention_resolutions``, plus one in the
    middle block (always).

    Args:
        pose_channels: Channels of the pose tensor (20 for the official skeleton + limb-distance encoding).
        config: The architecture.
        learn_sigma: Predict the variance interpolant v too (output ``2 * image_channels`` channels).
    """

    def __init__(
        self, pose_channels: int = 20, config: PIDMUNetConfig = PIDMUNetConfig(), learn_sigma: bool = True
    ) -> None:
        super().__init__()
        self.config = config
        layout = encoder_layout(config.model_channels, config.channel_mult, config.num_res_blocks)
        self.num_levels = len(config.channel_mult)
        self.in_channels = config.image_channels + pose_channels
        self.model_channels = config.model_channels
        self.gradient_checkpointing = config.gradient_checkpointing
        if config.image_size % 2 ** (self.num_levels - 1):
            raise ValueError(f"image_size {config.image_size} is not divisible by 2^{self.num_levels - 1}")
        resolutions = [config.image_size // 2**level for level in range(self.num_levels)]
        unknown = sorted(set(config.attention_resolutions) - set(resolutions))
        if unknown:
            raise ValueError(
                f"attention_resolutions {unknown} match no level; the levels have resolutions {resolutions}"
            )
        tdb_levels = {level for level, r in enumerate(resolutions) if r in config.attention_resolutions}
        widths = [int(m * config.model_channels) for m in config.channel_mult]

        def block(res: ResBlock, texture_index: int | None, tail: ResBlock | None = None) -> TexturedBlock:
            channels = res.out_conv.out_channels
            attn = None if texture_index is None else TextureCrossAttention(channels, config.num_heads)
            return TexturedBlock(res, attn, texture_index, tail)

        self.texture_encoder = TextureEncoder(
            config.image_channels, config.model_channels, config.channel_mult, config.num_res_blocks, config.dropout,
            config.gradient_checkpointing,
        )  # fmt: skip
        embed = config.embed_channels
        self.time_embed = nn.Sequential(nn.Linear(config.model_channels, embed), nn.SiLU(), nn.Linear(embed, embed))
        self.input_conv = nn.Conv2d(self.in_channels, widths[0], 3, padding=1)
        self.encoder = nn.ModuleList()
        for k, spec in enumerate(layout, start=1):
            res = ResBlock(spec.in_channels, spec.out_channels, embed, dropout=config.dropout, resample=spec.resample)
            self.encoder.append(block(res, k if spec.last_of_level and spec.level in tdb_levels else None))

        num_features = len(layout) + 1
        ch = widths[-1]
        self.middle = block(
            ResBlock(ch, ch, embed, dropout=config.dropout),
            num_features - 1,
            ResBlock(ch, ch, embed, dropout=config.dropout),
        )

        self.decoder = nn.ModuleList()
        skip_widths = self.texture_encoder.feature_channels.copy()
        for level in reversed(range(self.num_levels)):
            for i in range(config.num_res_blocks + 1):
                j = len(self.decoder)
                res = ResBlock(ch + skip_widths.pop(), widths[level], embed, dropout=config.dropout)
                ch = widths[level]
                tail = None
                if level and i == config.num_res_blocks:
                    tail = ResBlock(ch, ch, embed, dropout=config.dropout, resample="up")
                tdb = level in tdb_levels and i == config.num_res_blocks - 1
                self.decoder.append(block(res, num_features - 1 - j if tdb else None, tail))

        out_channels = 2 * config.image_channels if learn_sigma else config.image_channels
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, out_channels, 3, padding=1)))
        if config.norm_channels_per_group is not None:
            regroup_normalization(self, config.norm_channels_per_group)

        stages = [*self.encoder, self.middle, *self.decoder]
        # Only the encoder features some TDB reads are kept (and cached by samplers), in ascending block order.
        self.texture_feature_indices: tuple[int, ...] = tuple(
            sorted({b.texture_index for b in stages if b.texture_index is not None})
        )

    def encode(self, source: Tensor) -> list[Tensor]:
        """Texture features of ``source`` (B, image_channels, H, W) that the TDBs read.

        Returns:
            ``[F[k] for k in self.texture_feature_indices]``; pass them as ``texture`` to reuse them across calls.
            They batch along dim 0 like the inputs (concatenate them to batch several conditions).
        """
        return self.texture_encoder(source, keep=self.texture_feature_indices)

    def forward(
        self,
        y_t: Tensor,
        t: Tensor,
        pose: Tensor,
        source: Tensor | None = None,
        texture: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Predict ``[ε | v]`` (or ``ε``) for the noisy target.

        Args:
            y_t: Noisy target images (B, image_channels, H, W); H and W divisible by ``2 ** (levels - 1)``.
            t: Timesteps (B,), fed raw to the sinusoidal embedding.
            pose: Target pose (B, pose_channels, H, W).
            source: Source images (B, image_channels, H, W) (all zeros for the null style); give this or ``texture``.
            texture: Precomputed ``encode(source)``.

        Returns:
            (B, 2 * image_channels or image_channels, H, W).
        """
        if (source is None) == (texture is None):
            raise ValueError("give exactly one of source and texture")
        stride = 2 ** (self.num_levels - 1)
        if y_t.shape[-2] % stride or y_t.shape[-1] % stride:
            raise ValueError(
                f"input size {tuple(y_t.shape[-2:])} is not divisible by {stride} ({self.num_levels} levels)"
            )
        x = torch.cat([y_t, pose], dim=1)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"y_t and pose have {y_t.shape[1]} + {pose.shape[1]} channels, the network expects {self.in_channels}"
            )
        if texture is None:
            texture = self.encode(source)
        if len(texture) != len(self.texture_feature_indices):
            raise ValueError(
                f"texture has {len(texture)} feature maps, expected {len(self.texture_feature_indices)} "
                f"(the output of encode())"
            )
        features = dict(zip(self.texture_feature_indices, texture))

        def run(block: TexturedBlock, h: Tensor) -> Tensor:
            feature = None if block.texture_index is None else features[block.texture_index]
            return run_block(block, h, emb, feature, checkpointed=self.gradient_checkpointing)

        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        h = self.input_conv(x)
        skips = [h]
        for stage in self.encoder:
            h = run(stage, h)
            skips.append(h)
        h = run(self.middle, h)
        for stage in self.decoder:
            h = run(stage, torch.cat([h, skips.pop()], dim=1))
        return run_in_float32(self.out, h)
