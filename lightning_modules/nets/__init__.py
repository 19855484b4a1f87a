"""Denoiser networks and their building blocks (plain ``nn.Module``s, no diffusion or Lightning logic)."""

from .attention import SelfAttention2d
from .blocks import ResBlock, Resample
from .layers import GroupNorm32, normalization, timestep_embedding, zero_module
from .sdm_unet import SDMUNet
from .spade import SPADEGroupNorm, SPADEResBlock

__all__ = [
    "GroupNorm32",
    "ResBlock",
    "Resample",
    "SDMUNet",
    "SPADEGroupNorm",
    "SPADEResBlock",
    "SelfAttention2d",
    "normalization",
    "timestep_embedding",
    "zero_module",
]
