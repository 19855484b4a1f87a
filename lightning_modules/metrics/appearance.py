"""Appearance transfer measured on part-labelled targets: does the generated person wear the source's colours?

For every generated image the mean colour inside each labelled body part of its target is compared with
  * the same part of the real target: ``part_colour_error``, the RGB distance (0-255 scale) of the part means,
    averaged over the parts present and then over images;
  * every identity of the evaluation set: ``identity_accuracy``, the share of images whose part colours are closest
    to their own identity's. An identity's reference colours are the part means of all its real targets, so chance
    level is one over the number of identities and the real targets themselves score (about) 1.
Only the built-in persons data has the part labels (``target_parts``) and identities this needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def part_mean_colours(images: Tensor, parts: Tensor, num_parts: int, min_pixels: int) -> Tensor:
    """Mean colour of each part: ``(N, num_parts, C)``, NaN where a part has fewer than ``min_pixels`` pixels.

    Args:
        images: ``(N, C, H, W)`` images.
        parts: ``(N, H, W)`` integer labels, ``1..num_parts`` for the parts and 0 for everything else.
        num_parts: number of part labels.
        min_pixels: fewest labelled pixels for a part to count.
    """
    one_hot = F.one_hot(parts, num_parts + 1)[..., 1:].to(images.dtype)  # (N, H, W, P), label 0 dropped
    counts = one_hot.sum(dim=(1, 2))
    sums = torch.einsum("nhwp,nchw->npc", one_hot, images)
    means = sums / counts.clamp(min=1).unsqueeze(-1)
    return means.masked_fill((counts < min_pixels).unsqueeze(-1), float("nan"))


def mean_part_distance(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distance of part colours averaged over the parts present in both: ``(...)`` from ``(..., P, C)``."""
    distance = (a - b).norm(dim=-1)
    return distance.nanmean(dim=-1)


class AppearanceTransfer(Metric):
    """``part_colour_error`` and ``identity_accuracy`` of generated images (see the module docstring).

    ``update`` takes images in [-1, 1] and measures them on the 0-255 scale.

    Args:
        num_parts: number of body-part labels (persons: 5: skin, hair, shirt, trousers, shoes).
        min_pixels: fewest labelled pixels for a part of one image to count.
    """

    full_state_update = False

    def __init__(self, num_parts: int = 5, min_pixels: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_parts < 1 or min_pixels < 1:
            raise ValueError(f"num_parts and min_pixels must be positive, got {num_parts} and {min_pixels}")
        self.num_parts = num_parts
        self.min_pixels = min_pixels
        self.add_state("generated", default=[], dist_reduce_fx="cat")
        self.add_state("real", default=[], dist_reduce_fx="cat")
        self.add_state("identity", default=[], dist_reduce_fx="cat")

    def update(self, fake: Tensor, target: Tensor, parts: Tensor, identity: Tensor) -> None:
        """Add generated images with their real targets, target part labels ``(N, H, W)`` and identities ``(N,)``."""
        if fake.shape != target.shape or parts.shape != fake.shape[:1] + fake.shape[2:]:
            raise ValueError(f"appearance: generated {tuple(fake.shape)}, target {tuple(target.shape)} and part "
                             f"labels {tuple(parts.shape)} must share batch and spatial size")
        low, high = (int(v) for v in torch.stack(parts.aminmax()).tolist())  # one host sync per batch
        if low < 0 or high > self.num_parts:
            raise ValueError(f"appearance: part labels must lie in 0..{self.num_parts}, got {low}..{high}")
        fake, target = ((x.float().clamp(-1, 1) + 1) * 127.5 for x in (fake, target))
        self.generated.append(part_mean_colours(fake, parts, self.num_parts, self.min_pixels))
        self.real.append(part_mean_colours(target, parts, self.num_parts, self.min_pixels))
        self.identity.append(identity.long())

    def compute(self) -> dict[str, Tensor]:
        if isinstance(self.identity, list) and not self.identity:
            raise RuntimeError("appearance: no images were added")
        generated, real, identity = (dim_zero_cat(state) for state in (self.generated, self.real, self.identity))
        error = mean_part_distance(generated, real)
        identities, index = identity.unique(return_inverse=True)
        references = torch.stack([real[index == k].nanmean(dim=0) for k in range(len(identities))])
        distances = mean_part_distance(generated.unsqueeze(1), references.unsqueeze(0)).nan_to_num(float("inf"))
        accuracy = (distances.argmin(dim=1) == index).float().mean()
        return {"part_colour_error": error.nanmean(), "identity_accuracy": accuracy}
