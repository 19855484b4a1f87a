"""The naive baseline the benchmark measures against: the original SDM/PIDM code's attention and guidance.

The original code computes attention with two einsums over a materialised ``(B·heads) × T × T`` weight matrix, q
and k each scaled by ``d^(-1/4)``, softmax in float32 (``QKVAttentionLegacy``), and evaluates the guidance variants
as separate sequential network calls. :func:`naive_copy` turns a condiff network into that baseline without
touching its weights, so the benchmark compares the same model side by side.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_modules.diffusion import Guidance
from lightning_modules.diffusion.gaussian import Denoiser
from lightning_modules.nets.attention import SelfAttention2d
from lightning_modules.nets.cross_attention import TextureCrossAttention


def einsum_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(qᵀk/√d)·v as the original code computes it, for (N, heads, d, T) queries and (N, heads, d, S) k, v.

    Returns:
        (N, heads, d, T), in the dtype of ``q``.
    """
    n, heads, d, length = q.shape
    scale = d**-0.25
    q, k, v = (x.reshape(n * heads, d, x.shape[-1]) for x in (q, k, v))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(n, heads, d, length)


class EinsumSelfAttention(nn.Module):
    """:class:`SelfAttention2d` evaluated with :func:`einsum_attention` (same parameters, same channel layout).

    Args:
        attention: The module whose weights are used.
    """

    def __init__(self, attention: SelfAttention2d) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: Tensor) -> Tensor:
        a = self.attention
        b, c, h, w = x.shape
        qkv = a.qkv(a.norm(x).reshape(b, c, h * w))
        q, k, v = qkv.reshape(b, 3, a.num_heads, c // a.num_heads, h * w).unbind(1)
        out = einsum_attention(q, k, v).reshape(b, c, h * w)
        return x + a.proj_out(out).reshape(b, c, h, w)


class EinsumCrossAttention(nn.Module):
    """:class:`TextureCrossAttention` evaluated with :func:`einsum_attention` (same parameters and heads).

    Args:
        attention: The module whose weights are used.
    """

    def __init__(self, attention: TextureCrossAttention) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, h: Tensor, texture: Tensor) -> Tensor:
        a = self.attention
        q = a.to_q(a.norm(h.flatten(2)))
        k, v = a.to_kv(texture.flatten(2)).chunk(2, dim=1)
        heads = (x.unflatten(1, (a.num_heads, -1)) for x in (q, k, v))
        out = einsum_attention(*heads).flatten(1, 2)
        return h + a.proj_out(out).view_as(h)


NAIVE_ATTENTION: dict[type[nn.Module], Callable[[Any], nn.Module]] = {
    SelfAttention2d: EinsumSelfAttention,
    TextureCrossAttention: EinsumCrossAttention,
}


def naive_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` whose attention modules run :func:`einsum_attention` instead of SDPA.

    Raises:
        ValueError: when ``net`` has no attention module to replace (the baseline would equal the network).
    """
    baseline = copy.deepcopy(net)
    targets = [(name, m) for name, m in baseline.named_modules() if type(m) in NAIVE_ATTENTION]
    if not targets:
        raise ValueError(f"{type(net).__name__} has no attention module of a type in {list(NAIVE_ATTENTION)}")
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = baseline.get_submodule(parent_name) if parent_name else baseline
        setattr(parent, child, NAIVE_ATTENTION[type(module)](module))
    return baseline


def sequential_guided_denoiser(
    model: Callable[..., Tensor], variants: Mapping[str, Mapping[str, Any]], guidance: Guidance
) -> Denoiser:
    """Like :func:`lightning_modules.diffusion.guided_denoiser`, but one network call per variant, in sequence."""
    names = guidance.active_variants

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        return guidance.combine({name: model(x, t, **variants[name]) for name in names})

    return denoise
