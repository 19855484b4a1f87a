"""DeepFashion In-shop person pairs, in the GFLA/NTED layout (PIDM's) and in the PATN CSV layout."""

from __future__ import annotations

from pathlib import Path

from datamodules.keypoints import TXT_FRAME_HEIGHT, TXT_FRAME_WIDTH
from datamodules.person_base import (
    PairSample,
    PersonPairDataModule,
    Split,
    TxtPosedImage,
    read_patn_pairs,
    require_file,
)

_IMAGE_SUFFIXES = (".jpg", ".png")


def _resolve_image(root: Path, entry: str, listed_in: Path) -> Path:
    """The listed image, or the same stem with the other suffix (the official lmdb stores .jpg entries as PNG)."""
    listed = root / entry
    for candidate in (listed, *(listed.with_suffix(suffix) for suffix in _IMAGE_SUFFIXES)):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{listed_in}: references missing image {listed} (also tried .jpg/.png)")


def _pose_path(root: Path, entry: str, listed_in: Path) -> Path:
    """``img/<rest>.jpg`` -> ``pose/<rest>.txt``."""
    parts = Path(entry).parts
    if not parts or parts[0] != "img":
        raise ValueError(f"{listed_in}: image path {entry!r} does not start with 'img/'")
    return require_file(root.joinpath("pose", *parts[1:]).with_suffix(".txt"), listed_in)


def read_gfla_pairs(root: Path, pair_file: Path) -> list[PairSample]:
    """Parse a GFLA pair list: one ``target,source1,source2,...`` line per sample, paths relative to ``root``.

    Raises:
        FileNotFoundError: if the list or any referenced image or pose file is missing (naming the list).
        ValueError: on a line with fewer than two paths (naming the file and line).
    """
    require_file(pair_file, root)
    images: dict[str, TxtPosedImage] = {}

    def posed(entry: str) -> TxtPosedImage:
        if entry not in images:
            image_path = _resolve_image(root, entry, pair_file)
            images[entry] = TxtPosedImage(entry, image_path, _pose_path(root, entry, pair_file))
        return images[entry]

    samples = []
    for line_number, line in enumerate(pair_file.read_text().splitlines(), start=1):
        entries = [entry.strip() for entry in line.split(",") if entry.strip()]
        if not entries:
            continue
        if len(entries) < 2:
            raise ValueError(f"{pair_file}:{line_number}: expected 'target,source[,source...]', got {line!r}")
        samples.append(PairSample(posed(entries[0]), tuple(posed(entry) for entry in entries[1:])))
    if not samples:
        raise ValueError(f"{pair_file}: no pairs listed")
    return samples


class DeepFashionDataModule(PersonPairDataModule):
    """DeepFashion in the GFLA/NTED layout used by PIDM.

    Layout under ``root``: ``img/.../*.jpg`` (or ``.png``), ``pose/.../*.txt`` (18 ``x y`` rows in the 256-frame
    with a 40-pixel x offset), ``{train,test}_pairs.txt`` (``target,source1,...`` per line; training draws a source
    uniformly at every fetch, testing takes the first) and ``{train,test}.lst`` (the split's images, one per line).
    Images are stretched to ``image_size`` squared like the original (256 or 512) unless ``keep_aspect``.
    """

    native_aspect = TXT_FRAME_WIDTH / TXT_FRAME_HEIGHT

    def read_pairs(self, split: Split) -> list[PairSample]:
        return read_gfla_pairs(self.root, self.root / f"{split}_pairs.txt")

    def image_list(self, split: Split) -> list[Path]:
        """The split's images from ``{split}.lst`` (e.g. the FID real set: the official protocol uses ``train``).

        Raises:
            FileNotFoundError: if the list or a listed image is missing (naming the list).
        """
        list_file = require_file(self.root / f"{split}.lst", self.root)
        entries = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        return [_resolve_image(self.root, entry, list_file) for entry in entries]

    def fid_reference_images(self, split: Split) -> list[Path]:
        """The split's ``.lst`` images, each once: PIDM's FID reference is every training image listed there,
        including those no pair uses."""
        return list(dict.fromkeys(self.image_list(split)))


class DeepFashionPATNDataModule(PersonPairDataModule):
    """DeepFashion in the PATN CSV layout.

    Files under ``root``: ``fashion-resize-annotation-{split}.csv`` (``name:keypoints_y:keypoints_x``),
    ``fashion-resize-pairs-{split}.csv`` (``from,to``) and photos in ``{train,test}/`` (256x176, keypoints in that
    pixel frame).
    """

    native_aspect = TXT_FRAME_WIDTH / TXT_FRAME_HEIGHT

    def read_pairs(self, split: Split) -> list[PairSample]:
        return read_patn_pairs(
            self.root / f"fashion-resize-annotation-{split}.csv",
            self.root / f"fashion-resize-pairs-{split}.csv",
            self.root / split,
        )
