"""Market-1501 person pairs (128x64) in the PATN CSV layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamodules.person_base import PairSample, PersonPairDataModule, Split, read_patn_pairs


def find_image_dir(root: Path, split: Split) -> Path:
    """The split's photo folder: ``{split}/`` as PATN/GFLA ship it, else the raw release's ``bounding_box_{split}/``.

    Raises:
        FileNotFoundError: neither folder exists; the message names both.
    """
    candidates = (root / split, root / f"bounding_box_{split}")
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"no Market-1501 {split} photo folder: neither {candidates[0]} nor {candidates[1]} exists")


class Market1501DataModule(PersonPairDataModule):
    """Market-1501 in the PATN layout: ``market-annotation-{split}.csv`` (``name:keypoints_y:keypoints_x``) and
    ``market-pairs-{split}.csv`` (``from,to``) beside the photos (128x64), either in ``{train,test}/`` (as PATN and
    GFLA ship them) or in the raw release's ``bounding_box_{train,test}/``; ``{split}/`` wins when both exist.

    Args:
        root: dataset root folder.
        image_size: image height in pixels.
        keep_aspect: keep the native 1:2 aspect (128x64); ``False`` stretches to a square.
        heatmap_sigma: Gaussian sigma in pixels for ``heatmap18``.
        **kwargs: the remaining options of ``PersonPairDataModule``.
    """

    native_aspect = 0.5

    def __init__(
        self, root: str, image_size: int = 128, keep_aspect: bool = True, heatmap_sigma: float = 3.0, **kwargs: Any
    ) -> None:
        super().__init__(root, image_size=image_size, keep_aspect=keep_aspect, heatmap_sigma=heatmap_sigma, **kwargs)

    def read_pairs(self, split: Split) -> list[PairSample]:
        return read_patn_pairs(
            self.root / f"market-annotation-{split}.csv",
            self.root / f"market-pairs-{split}.csv",
            find_image_dir(self.root, split),
        )
