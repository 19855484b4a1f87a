"""Semantic condition tensors built on the device from integer label and instance maps (official SDM layout)."""

import torch
import torch.nn.functional as F
from torch import Tensor


def one_hot_labels(label: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot encode class ids ``(B, H, W)`` into ``(B, num_classes, H, W)``.

    Ids must lie in ``0..num_classes-1`` (DataModules validate them when reading; checking here would need a
    host synchronisation).
    """
    if label.ndim != 3:
        raise ValueError(f"label maps must have shape (B, H, W), got {tuple(label.shape)}")
    return F.one_hot(label.long(), num_classes).permute(0, 3, 1, 2).to(dtype)


def instance_edges(instance: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Boundary map ``(B, 1, H, W)`` of instance maps ``(B, H, W)``: 1 where a pixel differs from a 4-neighbour.

    Both pixels of every differing pair are marked, so boundaries are two pixels wide (official SDM).
    """
    if instance.ndim != 3:
        raise ValueError(f"instance maps must have shape (B, H, W), got {tuple(instance.shape)}")
    edges = torch.zeros_like(instance, dtype=torch.bool)
    horizontal = instance[:, :, 1:] != instance[:, :, :-1]
    vertical = instance[:, 1:, :] != instance[:, :-1, :]
    edges[:, :, 1:] |= horizontal
    edges[:, :, :-1] |= horizontal
    edges[:, 1:, :] |= vertical
    edges[:, :-1, :] |= vertical
    return edges.unsqueeze(1).to(dtype)


def condition_channels(num_classes: int, instance_edges: bool) -> int:
    """Channels of the SDM condition: one per class, plus the instance-edge channel when it is used."""
    return num_classes + int(instance_edges)


def semantic_condition(
    label: Tensor, num_classes: int, instance: Tensor | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The SDM condition ``y``: one-hot classes, then the instance-edge channel when ``instance`` is given."""
    y = one_hot_labels(label, num_classes, dtype)
    if instance is None:
        return y
    if instance.shape != label.shape:
        raise ValueError(f"instance maps {tuple(instance.shape)} and label maps {tuple(label.shape)} differ in shape")
    return torch.cat([y, instance_edges(instance, dtype)], dim=1)


def drop_conditions(y: Tensor, drop_prob: float, generator: torch.Generator | None = None) -> Tensor:
    """Zero each sample's whole condition with probability ``drop_prob`` (the null condition of CFG training).

    A sample is kept when its uniform draw exceeds ``drop_prob``, as in official SDM.
    """
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"condition drop probability must lie in [0, 1], got {drop_prob}")
    if drop_prob == 0.0:
        return y
    draws = torch.rand(y.shape[0], generator=generator, device=y.device)
    keep = (draws > drop_prob).to(y.dtype)
    return y * keep.view(-1, *([1] * (y.ndim - 1)))
