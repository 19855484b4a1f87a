"""Target poses on the PIDM page: COCO-18 keypoints drawn enlarged, moved joint by joint with clicks.

Keypoints are float (18, 2) rows ``(x, y)`` in pixels of the model's (H, W) image, -1 for a missing joint, as
``datamodules.keypoints`` defines them; the picture shows them ``scale`` times larger.
"""

from __future__ import annotations

import cv2
import numpy as np

from datamodules.keypoints import COLORS, KEYPOINT_NAMES, LIMBS, MISSING, resize_keypoints
from datamodules.persons import CANVAS_SIZE, draw_person, random_appearance, random_pose

PICTURE_PIXELS = 320  # the skeleton picture is enlarged by an integer factor to at least this height


def picture_scale(size: tuple[int, int]) -> int:
    """Screen pixels per image pixel of the skeleton picture."""
    return max(1, -(-PICTURE_PIXELS // max(size)))


def visible(keypoints: np.ndarray) -> np.ndarray:
    """Which joints are present (neither coordinate is -1)."""
    return (keypoints != MISSING).all(axis=1)


def skeleton_picture(keypoints: np.ndarray, size: tuple[int, int], selected: int | None = None,
                     background: np.ndarray | None = None) -> np.ndarray:
    """The pose as an enlarged RGB picture (OpenPose colours), over a faded ``background`` image when given; the
    ``selected`` joint is ringed."""
    scale = picture_scale(size)
    height, width = size[0] * scale, size[1] * scale
    if background is None:
        canvas = np.full((height, width, 3), 40, dtype=np.uint8)
    else:
        enlarged = cv2.resize(background, (width, height), interpolation=cv2.INTER_NEAREST)
        canvas = (0.45 * enlarged).astype(np.uint8)
    points = (keypoints * scale + scale / 2).round().astype(int)
    present = visible(keypoints)
    thickness = max(2, scale // 2)
    for index, (a, b) in enumerate(LIMBS):
        if present[a] and present[b]:
            cv2.line(canvas, tuple(points[a]), tuple(points[b]), COLORS[index], thickness, cv2.LINE_AA)
    for joint in np.nonzero(present)[0]:
        cv2.circle(canvas, tuple(points[joint]), thickness + 1, COLORS[joint], -1, cv2.LINE_AA)
    if selected is not None and present[selected]:
        cv2.circle(canvas, tuple(points[selected]), thickness * 3, (255, 255, 255), 2, cv2.LINE_AA)
    return canvas


def place_joint(keypoints: np.ndarray, joint: int, picture_xy: tuple[float, float],
                size: tuple[int, int]) -> np.ndarray:
    """A copy of ``keypoints`` with ``joint`` moved to a clicked point of the enlarged picture (kept inside)."""
    if not 0 <= joint < len(KEYPOINT_NAMES):
        raise ValueError(f"joint {joint} is not one of the {len(KEYPOINT_NAMES)} COCO-18 joints")
    scale = picture_scale(size)
    moved = keypoints.astype(np.float64).copy()
    x, y = (np.asarray(picture_xy, dtype=np.float64) - scale / 2) / scale
    moved[joint] = (np.clip(x, 0, size[1] - 1), np.clip(y, 0, size[0] - 1))
    return moved


def remove_joint(keypoints: np.ndarray, joint: int) -> np.ndarray:
    """A copy of ``keypoints`` with ``joint`` missing (not rendered)."""
    removed = keypoints.astype(np.float64).copy()
    removed[joint] = MISSING
    return removed


def builtin_person(size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A person of the built-in persons generator at ``size``: the uint8 RGB image and its full keypoints."""
    rng = np.random.default_rng(seed)
    joints, _ = random_pose(rng, CANVAS_SIZE)
    image = draw_person(joints, random_appearance(rng), (235, 235, 235), CANVAS_SIZE)
    image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return image, resize_keypoints(joints, CANVAS_SIZE, size)
