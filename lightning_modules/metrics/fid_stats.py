"""On-disk cache of FID real-image statistics (feature sums, covariance sums, count).

A cache file is keyed by everything the statistics depend on: dataset, split, resolution, resize method, the
feature extractor (name, weights file, its sha256, resize kernel) and the images themselves (data root, sha256 of
the file list, count and the size they are loaded at; as the DataModules describe them).
The key is stored inside the file and compared on load, so a file whose key does not match is never used, whatever
its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from lightning_modules.metrics.distributed import process_rank

REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def real_stats_key(dataset: str, split: str, resolution: tuple[int, int] | None, resize: str,
                   extractor: dict[str, object], images: Mapping[str, object] | None) -> dict[str, object]:
    """The cache key as a JSON-normalised dict (tuples become lists, so stored and expected keys compare equal).

    Args:
        dataset: Dataset name, e.g. ``"ade20k"``.
        split: Which real images, e.g. ``"val"`` (SDM) or ``"train"`` (PIDM).
        resolution: ``(H, W)`` the images were resized to before the extractor, or None for native size.
        resize: Resize method name.
        extractor: The description returned by :func:`lightning_modules.metrics.fid.build_fid`.
        images: What identifies the real images (a DataModule fingerprint: root, file list digest, count, size).
    """
    key = {"dataset": dataset, "split": split, "resolution": resolution, "resize": resize, "extractor": extractor,
           "images": None if images is None else dict(images)}
    return json.loads(json.dumps(key, sort_keys=True))


def real_stats_path(stats_dir: str | os.PathLike, key: dict[str, object]) -> Path:
    """Readable file name for a key, with a digest of the whole key so different keys never share a file."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    resolution = "x".join(map(str, key["resolution"])) if key["resolution"] else "native"
    stem = "-".join([str(key["dataset"]), str(key["split"]), resolution, str(key["resize"]),
                     str(key["extractor"]["extractor"]), digest])
    return Path(stats_dir) / (re.sub(r"[^A-Za-z0-9_.-]", "_", stem) + ".pt")


def load_real_stats(fid: FrechetInceptionDistance, path: str | os.PathLike, key: dict[str, object]) -> bool:
    """Load cached real statistics into ``fid`` if the file exists and its key matches; returns whether it did.

    Under DDP only rank 0 takes the statistics (the other ranks keep zeros), because torchmetrics sums the real
    states of all ranks at ``compute()``.
    """
    path = Path(path)
    if not path.is_file():
        return False
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if stored.get("key") != key:
        warnings.warn(f"Ignoring FID real-statistics cache {path}: its key {stored.get('key')} does not match "
                      f"the expected {key}; the statistics will be recomputed.", stacklevel=2)
        return False
    if process_rank() == 0:
        for name in REAL_STATES:
            state = getattr(fid, name)
            setattr(fid, name, stored[name].to(device=state.device, dtype=state.dtype))
    return True


def save_real_stats(fid: FrechetInceptionDistance, path: str | os.PathLike, key: dict[str, object]) -> None:
    """Write the real statistics summed over all ranks (a collective: call on every rank; rank 0 writes).

    Afterwards rank 0 holds the summed statistics and the others zeros, as after :func:`load_real_stats`.
    """
    with fid.sync_context():
        totals = {name: getattr(fid, name).detach().clone() for name in REAL_STATES}
    if process_rank() == 0:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"key": key, **{name: value.cpu() for name, value in totals.items()}}, tmp)
        tmp.replace(path)
    for name, value in totals.items():
        setattr(fid, name, value if process_rank() == 0 else torch.zeros_like(value))
