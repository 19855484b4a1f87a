"""Files of a test run: PNGs whose names pair across folders, and the metrics JSON.

A test run writes under ``<log_dir>/test/``: ``generated/``, ``real/`` and the condition folders (``label/`` for
SDM, ``source/`` and ``pose/`` for PIDM), each holding ``<name>.png`` for the same sample names (SDM diversity
samples are ``<name>_s<k>.png``), plus ``metrics.json``. Nothing here knows about Lightning.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from datamodules.image_files import write_png
from datamodules.seeds import derived_seed
from lightning_modules.metrics.image_conversion import to_uint8

METRICS_FILE = "metrics.json"


def sample_name(path: str | os.PathLike) -> str:
    """The file-name stem of a dataset file, which names every PNG of that sample."""
    return Path(path).stem


def named_noise(names: Sequence[str], shape: Sequence[int], seed: int, index: int = 0,
                device: torch.device | str = "cpu") -> Tensor:
    """Standard-normal noise ``(len(names), *shape)``, each row seeded by its sample's name, ``seed`` and ``index``.

    A sample's initial noise (``index``: its diversity sample) therefore does not depend on batch composition or
    on how ranks shard the set.
    """

    def row(name: str) -> Tensor:
        generator = torch.Generator().manual_seed(derived_seed(seed, zlib.crc32(name.encode()), index))
        return torch.randn(tuple(shape), generator=generator)

    return torch.stack([row(name) for name in names]).to(device)


class TestOutputDir:
    """The ``test/`` folder of one run; it must be new, so a test run never overwrites another's files.

    Args:
        root: ``<log_dir>/test``.
    """

    __test__ = False  # not a pytest class

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def conflict(self) -> str | None:
        """Why this folder cannot take a new run's outputs (it already holds files), or None."""
        if self.root.exists() and any(self.root.iterdir()):
            return (f"{self.root} already holds the outputs of an earlier test run, and test runs never overwrite "
                    "each other. Let the logger pick a new version (leave trainer.logger.init_args.version unset), "
                    "or move that folder away.")
        return None

    def save_images(self, folder: str, names: Sequence[str], images: Tensor) -> None:
        """Write ``images`` ``(N, 3, H, W)`` in [-1, 1] as ``<folder>/<name>.png``, rounded like the metrics see them.

        Raises:
            FileExistsError: a file of that name exists, i.e. two samples share a name.
        """
        self._write(folder, names, to_uint8(images))

    def save_label_maps(self, folder: str, names: Sequence[str], labels: Tensor) -> None:
        """Write class-id maps ``(N, H, W)`` as single-channel 8-bit PNGs holding the ids themselves."""
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 255):
            raise ValueError(f"label maps must hold class ids in 0..255 to be saved as 8-bit PNGs, got "
                             f"{int(labels.min())}..{int(labels.max())}")
        self._write(folder, names, labels.to(torch.uint8).unsqueeze(1))

    def _write(self, folder: str, names: Sequence[str], images: Tensor) -> None:
        if len(names) != images.shape[0]:
            raise ValueError(f"{len(names)} names for {images.shape[0]} images in {folder!r}")
        for name, pixels in zip(names, images.cpu(), strict=True):
            path = self.root / folder / f"{name}.png"
            if path.exists():
                raise FileExistsError(f"{path} was already written in this test run: two test samples share the "
                                      f"name {name!r} (names come from the dataset's file names)")
            write_png(path, pixels)

    def write_metrics(self, report: Mapping[str, Any]) -> Path:
        """Write ``report`` as ``metrics.json``; a non-finite score is written as NaN/Infinity, never hidden."""
        path = self.root / METRICS_FILE
        if path.exists():
            raise FileExistsError(f"{path} exists; test runs never overwrite each other's metrics")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_plain(report), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path


def _plain(value: Any) -> Any:
    """Tensors as numbers or lists, tuples as lists, mapping keys as strings."""
    if isinstance(value, Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
