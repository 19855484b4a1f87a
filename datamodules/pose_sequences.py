"""Pose sequences (one COCO-18 pose per video frame) read from the files people have, plus gap filling and smoothing.

A :class:`PoseSequence` holds ``keypoints`` float64 ``(T, 18, 2)`` with rows ``(x, y)`` in pixel-index coordinates of
a ``frame_size = (height, width)`` frame, in the OpenPose COCO-18 order of :data:`datamodules.keypoints.KEYPOINT_NAMES`
(nose, neck, right shoulder, right elbow, right wrist, left shoulder, left elbow, left wrist, right hip, right knee,
right ankle, left hip, left knee, left ankle, right eye, left eye, right ear, left ear). A joint is either visible
(both coordinates given) or missing, both coordinates :data:`~datamodules.keypoints.MISSING` (-1). ``confidence``
``(T, 18)`` lies in [0, 1]: the detector's score for OpenPose JSON, 1.0 for visible joints of formats without scores,
0 for missing joints and for joints that :func:`fill_missing` filled in. ``names`` gives one name per frame.

:func:`load_pose_sequence` accepts three forms:

* **a folder of per-frame OpenPose JSON files** (``*.json``), as OpenPose, DWPose / controlnet-aux and the TikTok /
  UBC-Fashion preprocessing scripts write them: ``{"people": [{"pose_keypoints_2d": [x0, y0, c0, ...]}, ...]}``
  with 18 joints (COCO-18, kept as is) or 25 joints (BODY_25: mapped to COCO-18, MidHip and the six foot joints
  dropped). A joint whose confidence is 0 or below ``min_confidence`` is missing. Person selection: with several
  people in a frame, the one with the highest *total* confidence over the 18 COCO joints is taken (a total, not a
  mean, so a fully detected person beats a small or half-hidden one with a few confident joints; ties go to the
  first listed). A frame with no people (or none with body keypoints) becomes an all-missing frame, and one
  warning names such files. Frame size: ``canvas_height`` / ``canvas_width`` in the files (DWPose / controlnet-aux
  write them) give ``frame_size``; otherwise ``frame_size`` must be passed, else a ValueError says so. Normalised
  coordinates: when every coordinate of every detected joint (confidence > 0) of the selected people of the whole
  sequence is ``<= 1.0``, the sequence is taken to be normalised (as controlnet-aux's DWPose JSON is: pixel / size)
  and x is multiplied by the frame width, y by the frame height. The rule looks at the whole sequence at once, never
  frame by frame, so that a pixel-coordinate frame whose only visible joint sits in the top-left pixel is not
  rescaled.
* **a folder of GFLA/NTED txt files** (``*.txt``, 18 rows ``x y``, read by
  :func:`~datamodules.keypoints.load_keypoints_txt`). They live in the fixed txt frame (a 256-high frame whose
  176-wide person image starts at x = 40) and are returned in pixel coordinates of a 256x176 image
  (``frame_size = (256, 176)``); passing another ``frame_size`` is an error.
* **one PATN annotation CSV** (``name:keypoints_y:keypoints_x``, read by
  :func:`~datamodules.keypoints.load_patn_csv`), one frame per row *in file order* (the order a sequence was
  written in; names are not sorted). Its coordinates are the stored photo's pixels: ``frame_size`` defaults to
  DeepFashion's ``(256, 176)``; pass ``(128, 64)`` for Market-1501. A name listed twice is an error.

Folder frames are ordered by natural sort of their file names (``frame_2`` before ``frame_10``, case-insensitive);
the frame names are the file stems. Files with other suffixes (rendered images, for instance) and sub-folders are
ignored; a folder holding both ``.json`` and ``.txt`` files, or neither, and a path of any other kind raise a
ValueError naming the path. A joint given by only one coordinate (the other -1) is read as missing.

:func:`fill_missing` fills a joint's missing frames from the nearest frames where it is visible (linear
interpolation in between, the nearest visible value carried at the ends), leaving gaps longer than ``max_gap`` frames
and never-visible joints missing; filled joints get confidence 0, so ``visible & (confidence == 0)`` marks them.
:func:`smooth` is a temporal Gaussian filter over visible values only (normalised convolution), which never moves a
missing joint.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.keypoints import (
    MISSING,
    NUM_KEYPOINTS,
    TXT_FRAME_HEIGHT,
    TXT_FRAME_WIDTH,
    load_keypoints_txt,
    load_patn_csv,
    resize_keypoints,
    transform_keypoints,
)

# Pixel frame that txt keypoints (after transform_keypoints) and DeepFashion PATN CSV keypoints refer to.
TXT_IMAGE_SIZE: tuple[int, int] = (TXT_FRAME_HEIGHT, TXT_FRAME_WIDTH)

# BODY_25 index of each COCO-18 joint (BODY_25 8 = MidHip and 19-24 = feet are dropped).
BODY25_TO_COCO18: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)

_JOINT_COUNTS = {NUM_KEYPOINTS: None, 25: BODY25_TO_COCO18}


@dataclass(frozen=True)
class PoseSequence:
    """``T`` COCO-18 poses in pixel coordinates of a ``frame_size = (height, width)`` frame; see the module docstring.

    The arrays are stored as read-only float64 copies. A missing joint has both coordinates -1 and confidence 0.
    """

    keypoints: np.ndarray
    confidence: np.ndarray
    names: tuple[str, ...]
    frame_size: tuple[int, int]

    def __post_init__(self) -> None:
        keypoints = np.array(self.keypoints, dtype=np.float64)
        confidence = np.array(self.confidence, dtype=np.float64)
        names = tuple(str(name) for name in self.names)
        if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_KEYPOINTS, 2) or keypoints.shape[0] < 1:
            raise ValueError(f"PoseSequence keypoints must have shape (T, {NUM_KEYPOINTS}, 2) with T >= 1, got "
                             f"{keypoints.shape}")
        frames = keypoints.shape[0]
        if confidence.shape != (frames, NUM_KEYPOINTS):
            raise ValueError(f"PoseSequence confidence must have shape ({frames}, {NUM_KEYPOINTS}) to match the "
                             f"keypoints, got {confidence.shape}")
        if len(names) != frames:
            raise ValueError(f"PoseSequence needs one name per frame: {frames} frames, {len(names)} names")
        size = tuple(self.frame_size)
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
            raise ValueError(f"PoseSequence frame_size must be (height, width) as two positive integers, got "
                             f"{self.frame_size!r}")
        if not np.isfinite(keypoints).all():
            raise ValueError("PoseSequence keypoints must be finite")
        if not (np.isfinite(confidence).all() and (confidence >= 0).all() and (confidence <= 1).all()):
            raise ValueError("PoseSequence confidence must lie in [0, 1]")
        missing = keypoints == MISSING
        if (missing[..., 0] != missing[..., 1]).any():
            frame, joint = np.argwhere(missing[..., 0] != missing[..., 1])[0]
            raise ValueError(f"PoseSequence joint {joint} of frame {frame} ({names[frame]}) is partly missing: a "
                             f"missing joint has both coordinates {MISSING}")
        if (confidence[missing[..., 0]] != 0).any():
            raise ValueError("PoseSequence missing joints must have confidence 0")
        keypoints.setflags(write=False)
        confidence.setflags(write=False)
        object.__setattr__(self, "keypoints", keypoints)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "frame_size", (int(size[0]), int(size[1])))

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    @property
    def visible(self) -> np.ndarray:
        """bool ``(T, 18)``: True where a joint has coordinates (read or filled)."""
        return self.keypoints[..., 0] != MISSING

    def resized(self, image_size: tuple[int, int]) -> PoseSequence:
        """The sequence in pixel coordinates of an ``(H, W)`` image that the frame is stretched to; -1 stays -1."""
        image_size = (int(image_size[0]), int(image_size[1]))
        flat = resize_keypoints(self.keypoints.reshape(-1, 2), self.frame_size, image_size)
        return PoseSequence(flat.reshape(self.keypoints.shape), self.confidence, self.names, image_size)


def natural_key(name: str) -> tuple:
    """Sort key putting ``frame_2`` before ``frame_10`` (digit runs compare as numbers, the rest case-insensitively)."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if index % 2 else part.lower() for index, part in enumerate(parts)), name


def _as_frame_size(frame_size: tuple[int, int] | None) -> tuple[int, int] | None:
    if frame_size is None:
        return None
    size = tuple(frame_size)
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"frame_size must be (height, width) as two positive integers, got {frame_size!r}")
    return int(size[0]), int(size[1])


def _mark_partial_missing(keypoints: np.ndarray) -> np.ndarray:
    """Joints with any coordinate -1 become fully missing."""
    keypoints = keypoints.copy()
    keypoints[(keypoints == MISSING).any(axis=-1)] = MISSING
    return keypoints


def _read_openpose_frame(path: Path) -> tuple[np.ndarray | None, tuple[int, int] | None]:
    """The selected person's raw ``(18, 3)`` rows ``x, y, c`` (None when nobody is there) and the canvas size."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a JSON file ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise ValueError(f"{path}: not an OpenPose JSON file (expected an object with a 'people' list)")
    canvas = None
    if "canvas_height" in data or "canvas_width" in data:
        try:
            canvas = _as_frame_size((data["canvas_height"], data["canvas_width"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: canvas_height/canvas_width must both be positive integers") from error
    best, best_score = None, -math.inf
    for index, person in enumerate(data["people"]):
        flat = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if not flat:  # controlnet-aux writes null for a person without body keypoints
            continue
        count, remainder = divmod(len(flat), 3)
        if remainder or count not in _JOINT_COUNTS:
            raise ValueError(f"{path}: person {index} has {len(flat)} pose_keypoints_2d values ({len(flat) / 3:g} "
                             f"joints); expected 54 (COCO-18) or 75 (BODY_25)")
        try:
            rows = np.asarray(flat, dtype=np.float64).reshape(count, 3)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: person {index} has non-numeric pose_keypoints_2d") from error
        mapping = _JOINT_COUNTS[count]
        if mapping is not None:
            rows = rows[list(mapping)]
        if not np.isfinite(rows).all():
            raise ValueError(f"{path}: person {index} has non-finite pose_keypoints_2d")
        score = rows[:, 2].clip(min=0).sum()
        if score > best_score:
            best, best_score = rows, score
    return best, canvas


def _load_openpose_folder(files: list[Path], frame_size: tuple[int, int] | None,
                          min_confidence: float) -> PoseSequence:
    frames, canvases, empty = [], {}, []
    for path in files:
        rows, canvas = _read_openpose_frame(path)
        if canvas is not None:
            canvases.setdefault(canvas, path)
        if rows is None:
            empty.append(path.name)
            rows = np.zeros((NUM_KEYPOINTS, 3))
        frames.append(rows)
    if len(canvases) > 1:
        listed = ", ".join(f"{h}x{w} in {p.name}" for (h, w), p in canvases.items())
        raise ValueError(f"{files[0].parent}: frames disagree on canvas_height x canvas_width ({listed})")
    if canvases:
        canvas = next(iter(canvases))
        if frame_size is not None and frame_size != canvas:
            raise ValueError(f"{files[0].parent}: frame_size {frame_size} contradicts the JSON canvas size "
                             f"{canvas} (canvas_height, canvas_width); leave frame_size out")
        frame_size = canvas
    if frame_size is None:
        raise ValueError(f"{files[0].parent}: OpenPose JSON has no frame size (no canvas_height/canvas_width): pass "
                         f"frame_size (--pose_frame_size), the video's height and width")
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        warnings.warn(f"{files[0].parent}: no person in {len(empty)} of {len(files)} frames ({shown}); those frames "
                      f"are all-missing", stacklevel=3)
    raw = np.stack(frames)
    detected = raw[..., 2] > 0
    kept = detected & (raw[..., 2] >= min_confidence)
    keypoints = raw[..., :2].copy()
    if detected.any() and (keypoints[detected] <= 1.0).all():
        keypoints *= (frame_size[1], frame_size[0])
    keypoints[~kept] = MISSING
    keypoints = _mark_partial_missing(keypoints)
    confidence = np.where(keypoints[..., 0] != MISSING, raw[..., 2].clip(0, 1), 0.0)
    return PoseSequence(keypoints, confidence, tuple(p.stem for p in files), frame_size)


def _load_txt_folder(files: list[Path], frame_size: tuple[int, int] | None) -> PoseSequence:
    if frame_size is not None and frame_size != TXT_IMAGE_SIZE:
        raise ValueError(f"{files[0].parent}: GFLA txt poses have the fixed frame {TXT_IMAGE_SIZE} (height, width); "
                         f"frame_size {frame_size} does not apply (resize the sequence instead)")
    keypoints = np.stack([_mark_partial_missing(transform_keypoints(_mark_partial_missing(load_keypoints_txt(p)),
                                                                    TXT_IMAGE_SIZE)) for p in files])
    return _with_unit_confidence(keypoints, tuple(p.stem for p in files), TXT_IMAGE_SIZE)


def _load_csv(path: Path, frame_size: tuple[int, int] | None) -> PoseSequence:
    annotations = load_patn_csv(path)
    with path.open(newline="") as handle:
        rows = [line.split(":", 1)[0] for line in handle.read().splitlines()[1:] if line.strip()]
    repeated = sorted(name for name, count in Counter(rows).items() if count > 1)
    if repeated:
        raise ValueError(f"{path}: frame name(s) listed more than once: {', '.join(repeated[:5])}")
    if not annotations:
        raise ValueError(f"{path}: the CSV holds no pose rows")
    keypoints = np.stack([_mark_partial_missing(points) for points in annotations.values()])
    return _with_unit_confidence(keypoints, tuple(annotations), frame_size or TXT_IMAGE_SIZE)


def _with_unit_confidence(keypoints: np.ndarray, names: tuple[str, ...], frame_size: tuple[int, int]) -> PoseSequence:
    confidence = (keypoints[..., 0] != MISSING).astype(np.float64)
    return PoseSequence(keypoints, confidence, names, frame_size)


def load_pose_sequence(path: str | Path, frame_size: tuple[int, int] | None = None,
                       min_confidence: float = 0.1) -> PoseSequence:
    """Read a pose sequence: a folder of OpenPose JSON or GFLA txt files, or one PATN CSV (see the module docstring).

    Args:
        path: the folder or CSV file.
        frame_size: ``(height, width)`` of the video frames the coordinates refer to. Needed for OpenPose JSON without
            ``canvas_height``/``canvas_width``; for a CSV it defaults to ``(256, 176)``; txt poses are always
            ``(256, 176)``.
        min_confidence: OpenPose JSON joints scoring below this (or 0) are missing.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: on an unsupported path, a mixed or empty folder, a malformed file, a wrong joint count or a
            missing frame size; the message names the path.
    """
    path = Path(path)
    frame_size = _as_frame_size(frame_size)
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must lie in [0, 1], got {min_confidence}")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return _load_csv(path, frame_size)
        raise ValueError(f"{path}: a pose sequence is a folder of OpenPose .json or GFLA .txt files (one per frame) "
                         f"or one PATN .csv file, not a {path.suffix or 'suffix-less'} file")
    if not path.is_dir():
        raise FileNotFoundError(f"pose sequence not found: {path}")
    by_suffix: dict[str, list[Path]] = {".json": [], ".txt": []}
    for child in path.iterdir():
        suffix = child.suffix.lower()
        if child.is_file() and not child.name.startswith(".") and suffix in by_suffix:
            by_suffix[suffix].append(child)
    if by_suffix[".json"] and by_suffix[".txt"]:
        raise ValueError(f"{path}: the folder mixes OpenPose .json ({len(by_suffix['.json'])}) and GFLA .txt "
                         f"({len(by_suffix['.txt'])}) pose files; keep one format per sequence")
    if not by_suffix[".json"] and not by_suffix[".txt"]:
        raise ValueError(f"{path}: the folder holds no pose files (OpenPose .json or GFLA .txt, one per frame)")
    if by_suffix[".json"]:
        return _load_openpose_folder(sorted(by_suffix[".json"], key=lambda p: natural_key(p.name)), frame_size,
                                     min_confidence)
    return _load_txt_folder(sorted(by_suffix[".txt"], key=lambda p: natural_key(p.name)), frame_size)


def fill_missing(sequence: PoseSequence, max_gap: int | None = None) -> PoseSequence:
    """Fill each joint's missing frames from the frames where it is visible.

    Inside a gap the joint moves linearly between the nearest visible frames before and after; before its first and
    after its last visible frame it keeps the nearest visible position. A gap (a run of consecutive missing frames,
    including a run at either end) longer than ``max_gap`` frames stays missing; ``None`` fills every gap, 0 none.
    A joint visible in no frame stays missing. Filled joints get confidence 0.
    """
    if max_gap is not None and max_gap < 0:
        raise ValueError(f"max_gap must be >= 0 or None, got {max_gap}")
    keypoints = sequence.keypoints.copy()
    visible = sequence.visible
    frames = np.arange(len(sequence))
    for joint in range(NUM_KEYPOINTS):
        shown = frames[visible[:, joint]]
        if shown.size == 0 or shown.size == len(sequence):
            continue
        fill = ~visible[:, joint]
        if max_gap is not None:
            fill &= _gap_lengths(fill) <= max_gap
        for axis in range(2):
            keypoints[fill, joint, axis] = np.interp(frames[fill], shown, keypoints[shown, joint, axis])
    return PoseSequence(keypoints, sequence.confidence, sequence.names, sequence.frame_size)


def _gap_lengths(missing: np.ndarray) -> np.ndarray:
    """For each frame, the length of the run of consecutive missing frames it belongs to (0 where visible)."""
    lengths = np.zeros(missing.shape[0], dtype=np.int64)
    start = None
    for index, is_missing in enumerate([*missing.tolist(), False]):
        if is_missing and start is None:
            start = index
        elif not is_missing and start is not None:
            lengths[start:index] = index - start
            start = None
    return lengths


def smooth(sequence: PoseSequence, sigma: float) -> PoseSequence:
    """Temporal Gaussian smoothing of each joint's x and y over frames, using visible values only.

    ``sigma`` is in frames (0 returns the sequence unchanged); the kernel is cut at 3 sigma. Each visible value
    becomes the Gaussian-weighted mean of the visible values of the same joint within reach, weights renormalised
    over them (normalised convolution); missing joints stay missing and never contribute. Near the ends of the
    sequence and next to gaps the window is one-sided, which pulls a moving joint slightly toward where it was.
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0 (frames), got {sigma}")
    if sigma == 0 or len(sequence) == 1:
        return sequence
    visible = sequence.visible.astype(np.float64)[..., None]
    values = np.where(visible > 0, sequence.keypoints, 0.0)
    total, weight = np.zeros_like(values), np.zeros_like(visible)
    frames = len(sequence)
    radius = min(max(1, math.ceil(3 * sigma)), frames - 1)
    for offset in range(-radius, radius + 1):
        kernel = math.exp(-0.5 * (offset / sigma) ** 2)
        target = slice(max(0, -offset), frames - max(0, offset))
        source = slice(max(0, offset), frames - max(0, -offset))
        total[target] += kernel * values[source] * visible[source]
        weight[target] += kernel * visible[source]
    keypoints = np.where(visible > 0, total / np.maximum(weight, 1e-300), MISSING)
    return PoseSequence(keypoints, sequence.confidence, sequence.names, sequence.frame_size)
