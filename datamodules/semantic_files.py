"""Listing, pairing and reading the files of semantic-image datasets."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Nearest neighbour sampled at pixel centres, as PIL's NEAREST (the official loaders' label resize). cv2.INTER_NEAREST
# samples at pixel corners instead: at a 4x downscale it picks source pixel 4i rather than 4i + 2, shifting the map
# by half an output pixel against its image.
INDEX_MAP_INTERPOLATION = cv2.INTER_NEAREST_EXACT


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


def read_index_map(path: Path) -> np.ndarray:
    """Read a single-channel label/instance map at full bit depth (16-bit PNGs keep their ids) as int64."""
    values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if values is None:
        raise ValueError(f"cannot read index map {path} (missing, corrupt or unsupported format)")
    if values.ndim != 2:
        raise ValueError(f"index map {path} must be single-channel, got shape {values.shape}")
    return values.astype(np.int64)


def _integer_scale_apart(size_a: tuple[int, int], size_b: tuple[int, int]) -> bool:
    """Whether one ``(H, W)`` size is the other times one integer factor on both sides."""
    small, large = sorted((size_a, size_b))
    return all(big % little == 0 for little, big in zip(small, large)) and large[0] // small[0] == large[1] // small[1]


def fit_index_map(
    values: np.ndarray, path: Path, image_size: tuple[int, int], image_path: Path, kind: str
) -> np.ndarray:
    """Bring a label or instance map (``kind``, for messages) read from ``path`` to the size of its image.

    A map of the image's size is returned as is; one that differs by a single integer factor on both sides (the
    512² part masks of CelebAMask-HQ's 1024² photos) is resized nearest-neighbour at pixel centres.

    Raises:
        ValueError: any other size (another aspect ratio, swapped sides, a non-integer factor), naming both files
            and both sizes.
    """
    if values.shape == image_size:
        return values
    if not _integer_scale_apart(values.shape, image_size):
        height, width = values.shape
        raise ValueError(
            f"{kind} {path} has size {height}x{width} but image {image_path} has size "
            f"{image_size[0]}x{image_size[1]}; a map must match its image or differ by one integer factor on both sides"
        )
    # int32 keeps 16-bit ids exact; cv2.resize has no int64 support.
    resized = cv2.resize(values.astype(np.int32), image_size[::-1], interpolation=INDEX_MAP_INTERPOLATION)
    return resized.astype(values.dtype)
