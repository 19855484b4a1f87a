"""Writing frame sequences as videos: an animated GIF (Pillow) and an MP4 (OpenCV's FFmpeg backend, MPEG-4 Part 2).

Both writers come with packages the project already installs (Pillow with torchvision, OpenCV with albumentations),
so videos need no extra dependency. The MP4 uses the ``mp4v`` codec, the one OpenCV's wheels can always encode: VLC,
ffmpeg-based players and most desktop players show it; browsers want H.264, which
``ffmpeg -i animation.mp4 -c:v libx264 -pix_fmt yuv420p out.mp4`` converts it to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def _check_frames(frames: Sequence[np.ndarray]) -> None:
    if not frames:
        raise ValueError("a video needs at least one frame")
    shapes = {frame.shape for frame in frames}
    if len(shapes) != 1 or frames[0].ndim != 3 or frames[0].shape[2] != 3 or frames[0].dtype != np.uint8:
        raise ValueError(f"video frames must be uint8 (H, W, 3) arrays of one size, got shapes {sorted(shapes)}")


def write_gif(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write uint8 RGB ``frames`` (H, W, 3) as an animated GIF that loops, ``fps`` frames per second."""
    _check_frames(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def write_mp4(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write uint8 RGB ``frames`` (H, W, 3) as an MP4 (``mp4v``) at ``fps`` frames per second."""
    import cv2

    _check_frames(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write the MP4 {path}")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))  # OpenCV takes BGR
    finally:
        writer.release()
    return path
