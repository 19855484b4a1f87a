"""Small building blocks shared by the SDM and PIDM networks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000) -> Tensor:
    """Sinusoidal embedding ``[cos | sin]`` of integer (or float) timesteps.

    Frequencies are ``exp(-ln(max_period) * i / half)`` for ``i < half = dim // 2``; an odd ``dim`` gets one zero
    column appended. Always computed in float32 from the raw timestep values.

    Args:
        t: Timesteps, shape ``(B,)``.
        dim: Embedding width.
        max_period: Longest period of the sinusoids.

    Returns:
        float32 tensor of shape ``(B, dim)``.
    """
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=t.device) / half
    freqs = torch.exp(-math.log(max_period) * exponents)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def run_block(block: nn.Module, *args: Tensor | None, checkpointed: bool) -> Tensor:
    """``block(*args)``, recomputing its activations in the backward pass when ``checkpointed`` and gradients are on.

    Gradient checkpointing trades compute for memory; it is non-reentrant, so ``None`` arguments, autocast and
    parameters without input gradients work as in a plain call. Without gradients it is a plain call.
    """
    if checkpointed and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)


def run_in_float32(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` outside autocast, in float32, when autocast is on (mixed precision keeps float32 weights).

    The output heads run this way, as the official fp16 networks keep their ``out`` layers in float32: ε̂ and the
    variance interpolant then reach the diffusion math unrounded. Without autocast (float32, or weights cast to a
    reduced precision) the module runs as it is.
    """
    if not torch.is_autocast_enabled(x.device.type):
        return module(x)
    with torch.autocast(x.device.type, enabled=False):
        return module(x.float())


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 and cast back to the input dtype (stable under fp16/bf16)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """The standard affine normaliser: float32 GroupNorm with ``min(32, channels)`` groups (the official
    grouping), or for widths it does not divide (e.g. 48) the most groups up to 32 that divide ``channels``."""
    groups = next(g for g in range(min(32, channels), 0, -1) if channels % g == 0)
    return GroupNorm32(groups, channels)


def regroup_normalization(module: nn.Module, channels_per_group: int) -> None:
    """Give every group normaliser inside ``module`` ``channels_per_group`` channels per group, in place.

    The official networks normalise with ``min(32, C)`` groups, which at C = 32 normalises every channel on its
    own: no layer can then pass a per-image mean colour to the output head, and the predicted noise misses its
    mean (a colour cast that 1/√ᾱ amplifies). Small networks can keep a few channels per group instead. Group
    normalisers are the modules with ``num_groups`` and ``num_channels`` (:class:`GroupNorm32`,
    ``SPADEGroupNorm``); their parameters do not depend on the grouping, so weights stay interchangeable.
    """
    if channels_per_group < 1:
        raise ValueError(f"channels_per_group must be at least 1, got {channels_per_group}")
    for name, norm in module.named_modules():
        if hasattr(norm, "num_groups") and hasattr(norm, "num_channels"):
            if norm.num_channels % channels_per_group:
                raise ValueError(
                    f"{name}: {norm.num_channels} channels cannot form groups of {channels_per_group} "
                    "(norm_channels_per_group must divide every width of the network)"
                )
            norm.num_groups = norm.num_channels // channels_per_group


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it (for residual branches that start as identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module
