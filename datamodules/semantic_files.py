"""Listing, pairing and reading the files of semantic-image datasets."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class SemanticSample:
    """Paths of one image, its label map and (optionally) its instance map."""

    image: Path
    label: Path
    instance: Path | None = None


def index_files(folder: Path, suffixes: tuple[str, ...], key: Callable[[Path], str | None]) -> dict[str, Path]:
    """Map a pairing key to each file under ``folder`` (recursively) whose name ends with one of ``suffixes``.

    Args:
        folder: directory to search; it must exist.
        suffixes: accepted file-name endings (case-insensitive), e.g. ``(".png",)`` or ``("_leftImg8bit.png",)``.
        key: pairing key of a file, or ``None`` to skip a file the dataset does not use.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: two files share a key.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or not path.name.lower().endswith(tuple(s.lower() for s in suffixes)):
            continue
        name = key(path)
        if name is None:
            continue
        if name in files:
            raise ValueError(f"two files share the pairing key {name!r}: {files[name]} and {path}")
        files[name] = path
    if not files:
        raise FileNotFoundError(f"no files ending in {suffixes} found under {folder}")
    return files


def relative_stem(folder: Path, suffix: str = "") -> Callable[[Path], str | None]:
    """Key function: path relative to ``folder`` with the extension (and a required name ``suffix``) removed.

    Files whose stem does not end with ``suffix`` get ``None`` (they belong to another annotation type).
    """

    def key(path: Path) -> str | None:
        relative = path.relative_to(folder).with_suffix("").as_posix()
        if not relative.endswith(suffix):
            return None
        return relative[: len(relative) - len(suffix)]

    return key


def pair_files(
    images: dict[str, Path], labels: dict[str, Path], instances: dict[str, Path] | None = None
) -> list[SemanticSample]:
    """Pair images with labels (and instances) by key, in sorted key order.

    Raises:
        ValueError: a key is present in one listing but not in another; the message names the unmatched file.
    """
    listings = {"label": labels, **({"instance": instances} if instances is not None else {})}
    for kind, files in listings.items():
        for name, path in files.items():
            if name not in images:
                raise ValueError(f"{kind} file {path} has no matching image (key {name!r})")
        for name, path in images.items():
            if name not in files:
                raise ValueError(f"image {path} has no matching {kind} file (key {name!r})")
    return [
        SemanticSample(images[name], labels[name], instances[name] if instances is not None else None)
        for name in sorted(images)
    ]


def read_rgb(path: Path) -> np.ndarray:
    """Read an image as uint8 RGB ``(H, W, 3)``; raise ``ValueError`` naming the file if it cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image file {path} (missing, corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_index_map(path: Path) -> np.ndarray:
    """Read a single-channel label/instance map at full bit depth (16-bit PNGs keep their ids) as int64."""
    values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if values is None:
        raise ValueError(f"cannot read index map {path} (missing, corrupt or unsupported format)")
    if values.ndim != 2:
        raise ValueError(f"index map {path} must be single-channel, got shape {values.shape}")
    return values.astype(np.int64)
