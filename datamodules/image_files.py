"""Reading and writing image files: RGB photos in, exact-valued PNGs out.

Decoding goes through PIL, as the official SDM and PIDM loaders do (OpenCV can decode the same JPEG to slightly
different pixels, and it applies EXIF orientation, which PIL and the official code do not). Label and instance maps
are read elsewhere at full bit depth (``semantic_files.read_index_map``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file as uint8 RGB ``(H, W, 3)``, exactly as PIL's ``Image.convert("RGB")`` gives it.

    EXIF orientation is not applied; greyscale, palette, 16-bit and alpha images become 8-bit RGB.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a decodable image (corrupt, truncated or another format); names the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except PermissionError:
        raise  # an OSError, but not a decoding failure; its message names the file
    except (OSError, SyntaxError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"cannot read image file {path}: not a decodable image ({error})") from error


def write_png(path: str | os.PathLike, pixels: np.ndarray | Tensor) -> None:
    """Write ``pixels`` losslessly as the PNG file ``path``, creating its folder.

    Args:
        path: the file to write (replaced if it exists).
        pixels: exact pixel values, either a NumPy array in the files' channel-last layout (uint8 ``(H, W, 3)`` RGB,
            or ``(H, W)`` grey in uint8 or uint16) or a uint8 tensor in the networks' channel-first layout
            (``(3, H, W)`` RGB or ``(1, H, W)`` grey). Model images in [-1, 1] become uint8 with
            ``lightning_modules.metrics.image_conversion.to_uint8``, the rounding the metrics score.

    Raises:
        ValueError: ``pixels`` has another shape or dtype.
        OSError: the file cannot be written; names it.
    """
    path = Path(path)
    array = _channel_last(pixels)
    grey = array.ndim == 2 and array.dtype in (np.uint8, np.uint16)
    rgb = array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    if not (grey or rgb):
        raise ValueError(f"cannot write {path}: pixels must be uint8 (H, W, 3) or uint8/uint16 (H, W) "
                         f"(tensors: uint8 (3 or 1, H, W)), got {array.dtype} {array.shape}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")
    except OSError as error:
        raise OSError(f"cannot write PNG file {path}: {error}") from error


def _channel_last(pixels: np.ndarray | Tensor) -> np.ndarray:
    if not isinstance(pixels, Tensor):
        return np.asarray(pixels)
    array = pixels.detach().cpu().numpy()
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    return array
