"""Flicker of a generated frame sequence, comparable across methods.

Frames are uint8 ``(T, C, H, W)`` (the 8-bit images that are written and scored), compared in 0–255 units:

- ``mean_frame_difference``: the mean absolute difference between consecutive frames, ``mean |f[t+1] − f[t]|``. Real
  motion changes pixels too, so on its own it only ranks methods on the same poses;
- ``flicker``: that of the generated frames minus that of the real frames of the same poses (0: as steady as the
  video; positive: changes that the motion does not explain);
- ``pixel_flicker``: the per-pixel version, ``mean |(g[t+1] − g[t]) − (r[t+1] − r[t])|``, the change between
  generated frames that the real frames do not have at that pixel (0 only when every change matches the video's).

:func:`video_flicker` scores the test command's written frames of video data (``<source>_to_<target>.png``, every
frame of a video generated from the video's first frame): videos are the frames that share a source, in name order.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
import torchvision
from torch import Tensor


def _differences(frames: Tensor) -> Tensor:
    if frames.dtype != torch.uint8 or frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"flicker needs uint8 frames shaped (T >= 2, C, H, W), got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    return frames[1:].double() - frames[:-1].double()


def mean_frame_difference(frames: Tensor) -> float:
    """``mean |f[t+1] − f[t]|`` over consecutive frames and pixels, in 0–255 units."""
    return _differences(frames).abs().mean().item()


def flicker(generated: Tensor, real: Tensor) -> float:
    """Mean frame difference of ``generated`` minus that of ``real`` (the same poses, the same shape)."""
    _check_pair(generated, real)
    return mean_frame_difference(generated) - mean_frame_difference(real)


def pixel_flicker(generated: Tensor, real: Tensor) -> float:
    """``mean |(g[t+1] − g[t]) − (r[t+1] − r[t])|``: per-pixel changes of ``generated`` that ``real`` lacks."""
    _check_pair(generated, real)
    return (_differences(generated) - _differences(real)).abs().mean().item()


def _check_pair(generated: Tensor, real: Tensor) -> None:
    if generated.shape != real.shape:
        raise ValueError(f"generated frames {tuple(generated.shape)} and real frames {tuple(real.shape)} differ")


def video_flicker(generated_dir: Path, real_dir: Path, min_frames: int = 2) -> dict[str, float]:
    """Mean over videos of :func:`flicker` and :func:`pixel_flicker` of the test command's written frames.

    Args:
        generated_dir: ``<source>_to_<target>.png`` generated frames; a video is the frames of one source.
        real_dir: The real frames under the same names.
        min_frames: Videos with fewer frames are left out.

    Returns:
        ``flicker``, ``pixel_flicker`` and ``videos`` (how many videos were scored); empty when none has enough frames.
    """
    videos: dict[str, list[str]] = defaultdict(list)
    for path in sorted(Path(generated_dir).glob("*_to_*.png")):
        videos[path.name.split("_to_")[0]].append(path.name)
    scores: list[tuple[float, float]] = []
    for names in videos.values():
        if len(names) < max(2, min_frames):
            continue
        generated, real = (torch.stack([torchvision.io.read_image(str(folder / name)) for name in names])
                           for folder in (Path(generated_dir), Path(real_dir)))
        scores.append((flicker(generated, real), pixel_flicker(generated, real)))
    if not scores:
        return {}
    count = len(scores)
    return {"flicker": sum(score[0] for score in scores) / count,
            "pixel_flicker": sum(score[1] for score in scores) / count, "videos": float(count)}
