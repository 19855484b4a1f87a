"""Person videos stored as frame folders with per-frame keypoints (UBC-Fashion, TikTok dance after preparation).

Layout under ``root`` (one folder per video; the split folders keep whole videos apart)::

    root/
        train/<video>/frames/00000.png ...      # the extracted frames (.png, .jpg or .jpeg)
        train/<video>/poses/00000.json ...      # one pose per frame, same stems: OpenPose JSON or GFLA txt
        test/<video>/frames/...  test/<video>/poses/...

Preparation from the released videos (UBC-Fashion's ``train``/``test`` mp4 lists, TikTok's dance clips): extract the
frames (``ffmpeg -i video.mp4 -vf fps=30 frames/%05d.png``), run a pose estimator that writes OpenPose JSON per frame
(OpenPose ``--write_json poses/``, or DWPose / controlnet-aux), and put each video's two folders under its split.
Poses are read as pose sequences (:mod:`datamodules.pose_sequences`: BODY_25 or COCO-18, the highest-confidence
person, coordinates in the frame's pixels) and a joint missing in some frames is filled from its neighbours.

Pairs come from frames of the same video: in training every frame is a target once, with a source drawn from the
video's frames at every fetch (the target itself with probability 1/T, a reconstruction pair: the video's frames are
one shared list, so memory stays linear in the number of frames); in the test split every frame but the first is a
target with the video's first frame as the source (animating a person from one photo). With ``pose_window`` K the
target's pose input holds the poses of the K frames centred on it (the first and last frame repeated beyond the ends
of the video).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datamodules.keypoints import resize_keypoints
from datamodules.person_base import PairSample, PersonPairDataModule, PosedImage, Split
from datamodules.pose_sequences import fill_missing, load_pose_sequence, natural_key

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True, eq=False)
class VideoFrame(PosedImage):
    """One frame of a video; ``video_keypoints`` (T, 18, 2) are every frame's keypoints in the frames' pixels (the
    same array for all frames of the video) and ``index`` is this frame's."""

    video_keypoints: np.ndarray
    index: int
    frames: tuple[Path, ...]

    def keypoints(self, native_size, image_size, scale_size, crop):
        return resize_keypoints(self.video_keypoints[self.index], native_size, scale_size or image_size, crop=crop)

    def neighbour(self, offset: int) -> VideoFrame:
        index = min(max(self.index + offset, 0), len(self.frames) - 1)
        if index == self.index:
            return self
        path = self.frames[index]
        return VideoFrame(video_frame_name(path), path, self.video_keypoints, index, self.frames)


def read_video(folder: Path, min_confidence: float) -> list[VideoFrame]:
    """The frames of one video folder with their keypoints; an error names a frame without a pose and the reverse."""
    frame_dir, pose_dir = folder / "frames", folder / "poses"
    if not frame_dir.is_dir() or not pose_dir.is_dir():
        raise FileNotFoundError(f"{folder}: expected frames/ and poses/ folders (datamodules/video.py)")
    frames = sorted((path for path in frame_dir.iterdir() if path.suffix.lower() in FRAME_SUFFIXES),
                    key=lambda path: natural_key(path.name))
    if len(frames) < 2:
        raise ValueError(f"{frame_dir} holds {len(frames)} frames; a video needs at least 2")
    with Image.open(frames[0]) as first:
        frame_size = (first.height, first.width)
    sequence = load_pose_sequence(pose_dir, frame_size if _json_poses(pose_dir) else None, min_confidence)
    names = [path.stem for path in frames]
    if list(sequence.names) != names:
        missing = sorted(set(names) ^ set(sequence.names))
        raise ValueError(f"{folder}: frames and poses do not match one to one (e.g. {missing[:3]} is in one folder "
                         "only)")
    keypoints = fill_missing(sequence).resized(frame_size).keypoints
    return [VideoFrame(video_frame_name(path), path, keypoints, index, tuple(frames))
            for index, path in enumerate(frames)]


def video_frame_name(path: Path) -> str:
    """``<video>/<frame file>``: frames of different videos share file names."""
    return f"{path.parent.parent.name}/{path.name}"


def _json_poses(pose_dir: Path) -> bool:
    return any(path.suffix.lower() == ".json" for path in pose_dir.iterdir())


class VideoDataModule(PersonPairDataModule):
    """Pose-guided person videos as frame folders with per-frame keypoints (module docstring).

    Args:
        root: The dataset folder holding ``train/`` and ``test/``, one folder per video in each.
        image_size: Image height (the width is the same, stretched, unless ``keep_aspect``).
        min_confidence: OpenPose joints with a lower confidence are missing (then filled from neighbouring frames).
        test_videos: Evaluate only these test videos (folder names; default all), e.g. one fine-tuned subject's.
        test_frames: Evaluate only these target frame indices of each test video (default all but the first, the
            source), e.g. the frames a subject fine-tuning did not see.
        **kwargs: The remaining options of ``PersonPairDataModule`` (pose encoding, ``pose_window``, augmentation,
            batch size, ...).
    """

    def __init__(
        self,
        root: str,
        image_size: int = 256,
        min_confidence: float = 0.1,
        test_videos: list[str] | None = None,
        test_frames: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, image_size=image_size, **kwargs)
        self.min_confidence = min_confidence
        self.test_videos = test_videos
        self.test_frames = test_frames

    def videos(self, split: Split) -> list[list[VideoFrame]]:
        """The split's videos, each its frames in order."""
        folder = self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {folder}")
        folders = sorted((path for path in folder.iterdir() if path.is_dir()), key=lambda path: natural_key(path.name))
        if split == "test" and self.test_videos is not None:
            unknown = sorted(set(self.test_videos) - {video.name for video in folders})
            if unknown:
                raise ValueError(f"test_videos: {unknown} are not videos of {folder}")
            folders = [video for video in folders if video.name in self.test_videos]
        if not folders:
            raise ValueError(f"{folder} holds no video folders")
        return [read_video(video, self.min_confidence) for video in folders]

    def read_pairs(self, split: Split) -> list[PairSample]:
        samples = []
        for frames in self.videos(split):
            if split == "train":
                everyone = tuple(frames)  # one shared tuple per video: memory stays linear in its length
                samples += [PairSample(frame, everyone) for frame in frames]
            else:
                keep = range(1, len(frames)) if self.test_frames is None else self.test_frames
                if any(not 0 <= index < len(frames) for index in keep):
                    raise ValueError(f"test_frames {list(keep)}: a video has frames 0..{len(frames) - 1}")
                samples += [PairSample(frames[index], (frames[0],)) for index in keep]
        return samples

    def fid_reference_images(self, split: Split) -> list[Path]:
        """Every frame of the split's videos."""
        return [frame.image_path for frames in self.videos(split) for frame in frames]
