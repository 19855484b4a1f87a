"""What identifies a set of real images, so that statistics cached for one set (FID) are never used for another."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageSetFingerprint:
    """Everything about a set of images that changes statistics computed from them.

    Attributes:
        root: The dataset root, as an absolute path.
        count: Number of images.
        files_sha256: sha256 of the images' paths relative to ``root``, sorted, one per line.
        image_size: ``(H, W)`` the images are loaded at: the size a metric receives them in.
    """

    root: str
    count: int
    files_sha256: str
    image_size: tuple[int, int]

    @classmethod
    def of_files(
        cls, root: str | os.PathLike, paths: Iterable[str | os.PathLike], image_size: Sequence[int]
    ) -> ImageSetFingerprint:
        """The fingerprint of ``paths`` (files under ``root``) loaded at ``image_size``."""
        relative = sorted(Path(os.path.relpath(path, root)).as_posix() for path in paths)
        digest = hashlib.sha256("\n".join(relative).encode()).hexdigest()
        height, width = image_size
        return cls(str(Path(root).resolve()), len(relative), digest, (int(height), int(width)))
