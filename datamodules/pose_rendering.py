"""Pose encodings rendered from COCO-18 keypoints: PIDM's official 20 channels and Gaussian heatmaps."""

from __future__ import annotations

import math
from typing import Literal, get_args

import cv2
import numpy as np
import torch

from datamodules.keypoints import COLORS, LIMBS, MISSING, NUM_KEYPOINTS

PoseEncoding = Literal["official20", "heatmap18"]
POSE_CHANNELS: dict[str, int] = {"official20": 3 + len(LIMBS), "heatmap18": NUM_KEYPOINTS}

_JOINT_RADIUS = 4
_STICK_WIDTH = 4


def _visible(point: np.ndarray) -> bool:
    return point[0] != MISSING and point[1] != MISSING


def _limb_polygon(point_a: np.ndarray, point_b: np.ndarray) -> np.ndarray:
    """The official limb ellipse, rasterised as a polygon (truncating casts as in the reference)."""
    mean_x, mean_y = (point_a + point_b) / 2.0
    length = ((point_a[0] - point_b[0]) ** 2 + (point_a[1] - point_b[1]) ** 2) ** 0.5
    angle = math.degrees(math.atan2(point_a[1] - point_b[1], point_a[0] - point_b[0]))
    return cv2.ellipse2Poly((int(mean_x), int(mean_y)), (int(length / 2), _STICK_WIDTH), int(angle), 0, 360, 1)


def render_official_pose(keypoints: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Render PIDM's 20-channel pose: an RGB skeleton (3) plus one L1 distance map per drawn limb (17).

    Args:
        keypoints: ``(18, 2)`` rows ``(x, y)`` in the ``(height, width)`` image frame, -1 for missing.
        height: output height.
        width: output width.

    Returns:
        float32 ``(20, height, width)`` in [0, 1]; a limb with a missing endpoint gives a constant 1.0 map.
    """
    canvas = np.zeros((height, width, 3), dtype=np.uint8)  # treated as BGR, like the reference
    for index in range(NUM_KEYPOINTS):
        if _visible(keypoints[index]):
            centre = (int(keypoints[index, 0]), int(keypoints[index, 1]))
            cv2.circle(canvas, centre, _JOINT_RADIUS, COLORS[index], thickness=-1)
    distance_maps = []
    for limb_index, (joint_a, joint_b) in enumerate(LIMBS):
        limb_mask = np.zeros((height, width), dtype=np.uint8)
        if _visible(keypoints[joint_a]) and _visible(keypoints[joint_b]):
            polygon = _limb_polygon(keypoints[joint_a], keypoints[joint_b])
            limb_layer = canvas.copy()
            cv2.fillConvexPoly(limb_layer, polygon, COLORS[limb_index])
            canvas = cv2.addWeighted(canvas, 0.4, limb_layer, 0.6, 0)
            cv2.fillConvexPoly(limb_mask, polygon, 255)
        # An empty mask has no zero pixel, so the distance saturates and the map becomes constant 1.0.
        distance = cv2.distanceTransform(255 - limb_mask, cv2.DIST_L1, 3)
        distance_maps.append(np.clip(distance / 3, 0, 255).astype(np.uint8))
    skeleton = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
    stacked = np.concatenate([skeleton, np.stack(distance_maps)], axis=0)
    return torch.from_numpy(np.ascontiguousarray(stacked)).float().div(255)


def render_heatmaps(keypoints: np.ndarray, height: int, width: int, sigma: float) -> torch.Tensor:
    """Render one Gaussian heatmap per joint, ``exp(-d^2 / (2 sigma^2))`` around it; a missing joint gives zeros.

    Args:
        keypoints: ``(18, 2)`` rows ``(x, y)`` in the ``(height, width)`` image frame, -1 for missing.
        height: output height.
        width: output width.
        sigma: Gaussian standard deviation in pixels.

    Returns:
        float32 ``(18, height, width)`` in [0, 1].
    """
    if sigma <= 0:
        raise ValueError(f"heatmap sigma must be positive, got {sigma}")
    points = np.asarray(keypoints, dtype=np.float64)
    squared_x = (np.arange(width) - points[:, :1]) ** 2  # (18, W)
    squared_y = (np.arange(height) - points[:, 1:]) ** 2  # (18, H)
    heatmaps = np.exp(-(squared_y[:, :, None] + squared_x[:, None, :]) / (2 * sigma**2))
    heatmaps[(points == MISSING).any(axis=1)] = 0.0
    return torch.from_numpy(heatmaps.astype(np.float32))


def render_pose(
    keypoints: np.ndarray, height: int, width: int, encoding: PoseEncoding = "official20", sigma: float = 6.0
) -> torch.Tensor:
    """Render ``keypoints`` with the named encoding (``sigma`` only matters for ``heatmap18``)."""
    if encoding == "official20":
        return render_official_pose(keypoints, height, width)
    if encoding == "heatmap18":
        return render_heatmaps(keypoints, height, width, sigma)
    raise ValueError(f"unknown pose encoding {encoding!r}; choose one of {list(get_args(PoseEncoding))}")
