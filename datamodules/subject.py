"""One subject's photos for subject fine-tuning (DreamPose's second stage): every ordered pair among them.

Layout: a folder of 1–10 photos (``.jpg``, ``.jpeg``, ``.png``) of one person, each with its pose as a GFLA/NTED txt
file of the same stem beside it (``front.jpg`` + ``front.txt``; the txt frame of docs/pidm.md, "Pose files")::

    my_subject/
        front.jpg  front.txt
        side.jpg   side.txt
        back.png   back.txt

Training draws every ordered pair (each photo is the target once with all the others as its sources; one photo alone
is its own source). The test and validation split are the same pairs with the first other photo as the source, so
the grids show the subject in the poses of its own photos. ``configs/pidm/finetune_subject.yaml`` fine-tunes a
trained checkpoint on such a folder; ``experiments.animate`` then animates the subject with the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamodules.person_base import PairSample, PersonPairDataModule, Split, TxtPosedImage

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_PHOTOS = 10


def subject_photos(root: Path) -> list[TxtPosedImage]:
    """The photos of ``root`` with their txt poses, in name order; an error names a photo without its pose."""
    if not root.is_dir():
        raise FileNotFoundError(f"subject folder not found: {root}")
    photos = sorted(path for path in root.iterdir() if path.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise ValueError(f"{root} holds no photos ({', '.join(PHOTO_SUFFIXES)})")
    if len(photos) > MAX_PHOTOS:
        raise ValueError(f"{root} holds {len(photos)} photos; subject fine-tuning takes at most {MAX_PHOTOS} of one "
                         "person (a dataset of many people is a DeepFashion-style layout)")
    missing = [photo.name for photo in photos if not photo.with_suffix(".txt").is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: no pose file for {', '.join(missing)} (expected <photo stem>.txt beside "
                                "each photo, GFLA txt keypoints)")
    return [TxtPosedImage(photo.name, photo, photo.with_suffix(".txt")) for photo in photos]


class SubjectDataModule(PersonPairDataModule):
    """Pairs among one subject's 1–10 photos (module docstring) for subject fine-tuning.

    Args:
        root: The subject's folder: photos with a GFLA txt pose of the same stem beside each.
        image_size: Image height (and width: photos are stretched to a square unless ``keep_aspect``).
        **kwargs: The remaining options of ``PersonPairDataModule`` (pose encoding and window, augmentation, batch
            size, ...); they must match the checkpoint being fine-tuned.
    """

    def __init__(self, root: str, image_size: int = 256, **kwargs: Any) -> None:
        super().__init__(root, image_size=image_size, **kwargs)

    def prepare_data(self) -> None:
        subject_photos(self.root)  # fail before training, naming what is missing

    def read_pairs(self, split: Split) -> list[PairSample]:
        photos = subject_photos(self.root)
        if len(photos) == 1:
            return [PairSample(photos[0], (photos[0],))]
        return [PairSample(target, tuple(photo for photo in photos if photo is not target)) for target in photos]
