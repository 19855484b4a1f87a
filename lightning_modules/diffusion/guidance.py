"""Classifier-free guidance as data: a linear combination of outputs under named condition variants.

Variant-name contract: a :class:`Guidance` names the condition variants it combines (e.g. ``"cond"``/``"null"``
for SDM, ``"full"``/``"pose"`` for official PIDM). :func:`guided_denoiser` receives, for each of those names, the
keyword arguments the network takes under that variant (e.g. ``{"y": y}`` and ``{"y": torch.zeros_like(y)}``).
Every variant must provide the same keywords; a variant whose weight is exactly 0 (and that is not the variance
source) is never evaluated and may be missing.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from lightning_modules.diffusion.gaussian import Denoiser, full_precision


@dataclass(frozen=True)
class Guidance:
    """guided = Σ_k weights[k]·out_k on the first ``mix_channels`` output channels; the rest from ``variance_from``.

    Args:
        weights: Weight of each variant's output. The weights of the usual rules sum to 1.
        mix_channels: Number of leading channels (ε̂) that are combined; ``None`` combines all channels (as
            official PIDM does, extrapolating the variance channels too).
        variance_from: Variant whose remaining channels are used unchanged; defaults to the first variant.
    """

    weights: Mapping[str, float]
    mix_channels: int | None = 3
    variance_from: str | None = None

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError("Guidance needs at least one variant weight")
        object.__setattr__(self, "weights", MappingProxyType({k: float(w) for k, w in self.weights.items()}))
        if self.mix_channels is not None and self.mix_channels < 1:
            raise ValueError(f"mix_channels must be positive or None, got {self.mix_channels}")
        if self.mix_channels is None:
            object.__setattr__(self, "variance_from", None)
        elif self.variance_from is None:
            object.__setattr__(self, "variance_from", next(iter(self.weights)))
        elif self.variance_from not in self.weights:
            raise ValueError(f"variance_from {self.variance_from!r} is not one of the variants {list(self.weights)}")

    @property
    def active_variants(self) -> tuple[str, ...]:
        """Variants that must be evaluated: non-zero weights plus the variance source."""
        return tuple(k for k, w in self.weights.items() if w != 0.0 or k == self.variance_from)

    def combine(self, outputs: Mapping[str, Tensor]) -> Tensor:
        """Combine per-variant outputs (each (B, channels, ...)) into the guided output, in full precision."""
        outputs = {name: full_precision(output) for name, output in outputs.items()}
        mixed = sum(w * outputs[k][:, : self.mix_channels] for k, w in self.weights.items() if w != 0.0)
        if self.mix_channels is None:
            return mixed
        return torch.cat([mixed, outputs[self.variance_from][:, self.mix_channels :]], dim=1)


def classifier_free(scale: float, cond: str = "cond", null: str = "null") -> Guidance:
    """SDM guidance ε̂_null + s·(ε̂_cond − ε̂_null) on ε only, variance from ``cond``.

    As in official SDM, guidance is active only for s > 1; otherwise only ``cond`` is evaluated.
    """
    if scale <= 1.0:
        return Guidance({cond: 1.0}, variance_from=cond)
    return Guidance({cond: scale, null: 1.0 - scale}, variance_from=cond)


def disentangled(w_pose: float, w_style: float) -> Guidance:
    """PIDM paper guidance ε(∅,∅) + w_p·(ε(p,∅) − ε(∅,∅)) + w_s·(ε(∅,s) − ε(∅,∅)).

    Variants ``"none"``, ``"pose"`` (pose only) and ``"style"`` (style only). No variant carries both conditions,
    so all channels are combined, as official PIDM guidance does.
    """
    return Guidance({"none": 1.0 - w_pose - w_style, "pose": w_pose, "style": w_style}, mix_channels=None)


def style_only(scale: float) -> Guidance:
    """Official PIDM guidance out(p,∅) + s·(out(p,s) − out(p,∅)) on all output channels.

    Variants ``"full"`` (pose and style) and ``"pose"`` (pose with the null style).
    """
    return Guidance({"full": scale, "pose": 1.0 - scale}, mix_channels=None)


def nested(s_image: float, s_pose: float) -> Guidance:
    """DreamPose guidance ε(∅,∅) + s_I·(ε(I,∅) − ε(∅,∅)) + s_p·(ε(I,p) − ε(I,∅)); variance from ``"full"``.

    Variants ``"none"``, ``"image"`` (image only) and ``"full"`` (image and pose).
    """
    return Guidance(
        {"none": 1.0 - s_image, "image": s_image - s_pose, "full": s_pose}, variance_from="full"
    )


def _concat_variants(keyword: str, values: Sequence[Any]) -> Any:
    first = values[0]
    if isinstance(first, Tensor):
        return torch.cat(values, dim=0)
    if isinstance(first, (list, tuple)):
        if any(not isinstance(v, (list, tuple)) or len(v) != len(first) for v in values):
            raise ValueError(f"guidance keyword {keyword!r}: every variant needs a sequence of {len(first)} tensors")
        return type(first)(torch.cat(parts, dim=0) for parts in zip(*values))
    if any(v is not first and v != first for v in values):
        raise ValueError(f"guidance keyword {keyword!r} is not a tensor, so it must be the same in every variant")
    return first


def guided_denoiser(
    model: Callable[..., Tensor], variants: Mapping[str, Mapping[str, Any]], guidance: Guidance
) -> Denoiser:
    """Wrap ``model(x, t, **kwargs)`` into a guided ``denoise(x, t)`` that runs all needed variants in one call.

    The variants' keyword values are concatenated along the batch once, here: tensors directly, lists and tuples of
    tensors element-wise (cached multi-scale features), other values passed through if equal in every variant.

    Args:
        model: The network, called as ``model(x, t, **kwargs)``.
        variants: Keyword arguments of each variant named by ``guidance`` (see the module docstring).
        guidance: The combination rule.
    """
    names = guidance.active_variants
    missing = [name for name in names if name not in variants]
    if missing:
        raise KeyError(f"guidance needs condition variants {missing}, got {list(variants)}")
    keywords = set(variants[names[0]])
    for name in names[1:]:
        if set(variants[name]) != keywords:
            raise ValueError(
                f"variant {name!r} has keywords {sorted(variants[name])}, variant {names[0]!r} has {sorted(keywords)}"
            )
    batched = {key: _concat_variants(key, [variants[name][key] for name in names]) for key in keywords}
    count = len(names)

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        batch = x.shape[0]
        output = model(x.repeat(count, *([1] * (x.ndim - 1))), t.repeat(count), **batched)
        return guidance.combine(dict(zip(names, output.split(batch))))

    return denoise
