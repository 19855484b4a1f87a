"""OpenPose COCO-18 keypoints: constants, file parsing and coordinate transforms.

Keypoint arrays are float64 ``(18, 2)`` with rows ``(x, y)`` in pixel-index coordinates of an image; ``-1`` marks a
missing joint (per coordinate, as in the official loaders).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

NUM_KEYPOINTS = 18
MISSING = -1.0

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip", "r_knee",
    "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)

# The 17 drawn OpenPose limbs as 0-based joint pairs; OpenPose's two ear-shoulder pairs are not drawn.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)

# OpenPose colours; they are written unchanged into a BGR canvas, so colour 0 ends up blue after BGR -> RGB.
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)

# The GFLA/NTED txt files live in a 256x256 frame whose 176-wide person image starts at x = 40.
TXT_FRAME_HEIGHT = 256
TXT_FRAME_WIDTH = 176
TXT_FRAME_X_OFFSET = 40


def _check_shape(keypoints: np.ndarray, source: str) -> np.ndarray:
    if keypoints.shape != (NUM_KEYPOINTS, 2):
        raise ValueError(f"{source}: expected {NUM_KEYPOINTS} keypoints of shape (18, 2), got shape {keypoints.shape}")
    return keypoints


def load_keypoints_txt(path: str | Path) -> np.ndarray:
    """Read a GFLA/NTED pose txt file (18 rows ``x y``) as float64 ``(18, 2)``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is unparsable or does not hold 18 (x, y) rows; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"keypoint file not found: {path}")
    try:
        keypoints = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path}: cannot parse keypoints ({error})") from error
    return _check_shape(keypoints, str(path))


def save_keypoints_txt(path: str | Path, keypoints: np.ndarray) -> None:
    """Write ``(18, 2)`` keypoints in the txt format that :func:`load_keypoints_txt` reads."""
    np.savetxt(path, _check_shape(np.asarray(keypoints, dtype=np.float64), str(path)), fmt="%.6f")


def _parse_coordinate_list(text: str, source: str) -> list[float]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: keypoint list is not JSON: {text!r}") from error
    if not isinstance(values, list) or len(values) != NUM_KEYPOINTS:
        raise ValueError(f"{source}: expected a list of {NUM_KEYPOINTS} coordinates, got {text!r}")
    return values


def load_patn_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PATN annotation CSV (``name:keypoints_y:keypoints_x``, JSON lists, y first) into name -> ``(18, 2)``.

    Returned rows are ``(x, y)`` in the pixel frame of the stored image; ``-1`` stays missing.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on a missing column or a malformed row; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    annotations: dict[str, np.ndarray] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter=":")
        missing_columns = {"name", "keypoints_y", "keypoints_x"} - set(reader.fieldnames or ())
        if missing_columns:
            raise ValueError(f"{path}: missing column(s) {sorted(missing_columns)} in header {reader.fieldnames}")
        for row in reader:
            source = f"{path}:{reader.line_num}"
            if row["keypoints_y"] is None or row["keypoints_x"] is None:
                raise ValueError(f"{source}: expected 3 ':'-separated fields, got {row}")
            ys = _parse_coordinate_list(row["keypoints_y"], source)
            xs = _parse_coordinate_list(row["keypoints_x"], source)
            annotations[row["name"]] = np.stack([xs, ys], axis=1).astype(np.float64)
    return annotations


def transform_keypoints(
    keypoints: np.ndarray,
    image_size: tuple[int, int],
    *,
    scale_size: tuple[int, int] | None = None,
    crop: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Map txt-frame keypoints into an ``(H, W)`` image, optionally up-scaled and cropped (the official transform).

    ``x' = (x - 40) * (W / 176) * (scale_W / W) - crop_x`` and ``y' = y * (H / 256) * (scale_H / H) - crop_y``;
    coordinates equal to -1 stay -1.

    Args:
        keypoints: ``(18, 2)`` rows ``(x, y)`` in the 256-frame with the 40-pixel x offset.
        image_size: ``(H, W)`` of the (stretched) image the keypoints should index.
        scale_size: ``(scale_H, scale_W)`` the image was resized to before cropping; ``None`` means no resize.
        crop: ``(crop_x, crop_y)`` top-left corner of the crop taken from the resized image.
    """
    height, width = image_size
    scale_height, scale_width = scale_size if scale_size is not None else image_size
    missing = keypoints == MISSING
    # The reference's operation order, kept so results agree with it to the last bit.
    factor_x = 1.0 / TXT_FRAME_WIDTH * width / width * scale_width
    factor_y = 1.0 / TXT_FRAME_HEIGHT * height / height * scale_height
    out = np.empty_like(keypoints, dtype=np.float64)
    out[:, 0] = (keypoints[:, 0] - TXT_FRAME_X_OFFSET) * factor_x - crop[0]
    out[:, 1] = keypoints[:, 1] * factor_y - crop[1]
    out[missing] = MISSING
    return out


def to_txt_frame(keypoints: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`transform_keypoints` without scale or crop: image-frame ``(H, W)`` -> txt frame."""
    height, width = image_size
    missing = keypoints == MISSING
    out = np.empty_like(keypoints, dtype=np.float64)
    out[:, 0] = keypoints[:, 0] * TXT_FRAME_WIDTH / width + TXT_FRAME_X_OFFSET
    out[:, 1] = keypoints[:, 1] * TXT_FRAME_HEIGHT / height
    out[missing] = MISSING
    return out


def resize_keypoints(
    keypoints: np.ndarray,
    from_size: tuple[int, int],
    to_size: tuple[int, int],
    *,
    crop: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Scale image-frame keypoints (e.g. PATN CSV) from an ``(H, W)`` image to another, then subtract a crop.

    Missing coordinates stay -1.
    """
    missing = keypoints == MISSING
    out = np.empty_like(keypoints, dtype=np.float64)
    out[:, 0] = keypoints[:, 0] * (to_size[1] / from_size[1]) - crop[0]
    out[:, 1] = keypoints[:, 1] * (to_size[0] / from_size[0]) - crop[1]
    out[missing] = MISSING
    return out
