"""Built-in persons videos: each synthetic person (datamodules/persons.py) moves smoothly through a sequence of frames.

Every identity gets one video of ``frames_per_video`` frames: its keyframe poses (the persons generator's random poses
of that identity) joined by linear interpolation of the joints, drawn with the identity's clothing on one background,
so consecutive frames differ only by the motion (ground truth for flicker and per-frame scores). The tree is written
once in the layout :class:`~datamodules.video.VideoDataModule` reads (``{train,test}/id_XXXXX/frames/NNNNN.png`` and
``poses/NNNNN.txt`` in the GFLA txt frame, ``manifest.json``); the last ``test_fraction`` of the identities are the
test videos.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.builtin_data import check_generated, generate_once
from datamodules.image_files import write_png
from datamodules.keypoints import save_keypoints_txt, to_txt_frame
from datamodules.person_base import PairSample, PersonPairDataset, Split
from datamodules.persons import PersonsSpec, draw_person, identity_appearance, image_scene, skeleton_part_labels
from datamodules.video import VideoDataModule


@dataclass(frozen=True)
class PersonsVideoSpec:
    """Everything that determines a generated persons video tree (stored in its manifest)."""

    persons: PersonsSpec
    frames_per_video: int

    def __post_init__(self) -> None:
        if self.frames_per_video < self.persons.poses_per_identity:
            raise ValueError(f"frames_per_video ({self.frames_per_video}) must be at least the number of keyframe "
                             f"poses ({self.persons.poses_per_identity})")


@functools.lru_cache(maxsize=256)  # every evaluation frame of a video asks for the same skeletons
def video_joints(spec: PersonsVideoSpec, identity: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The identity's full skeletons ``(frames, 18, 2)``: its keyframe poses joined linearly; and the background."""
    keyframes = [image_scene(spec.persons, identity, pose) for pose in range(spec.persons.poses_per_identity)]
    joints = np.stack([scene[0] for scene in keyframes])
    positions = np.linspace(0, len(keyframes) - 1, spec.frames_per_video)
    lower = np.minimum(np.floor(positions).astype(int), len(keyframes) - 2)
    weight = (positions - lower)[:, None, None]
    frames = (1 - weight) * joints[lower] + weight * joints[lower + 1]
    frames.setflags(write=False)  # cached and shared
    return frames, keyframes[0][2]


def _write_videos(root: Path, spec: PersonsVideoSpec) -> None:
    first_test = spec.persons.num_identities - spec.persons.num_test_identities
    canvas = spec.persons.canvas_size
    for identity in range(spec.persons.num_identities):
        look = identity_appearance(spec.persons, identity)
        video = root / ("test" if identity >= first_test else "train") / f"id_{identity:05d}"
        frames, background = video_joints(spec, identity)
        for index, joints in enumerate(frames):
            write_png(video / "frames" / f"{index:05d}.png", draw_person(joints, look, background, canvas))
            (video / "poses").mkdir(parents=True, exist_ok=True)
            save_keypoints_txt(video / "poses" / f"{index:05d}.txt", to_txt_frame(np.round(joints, 2), canvas))


def generate_persons_videos(root: str | Path, spec: PersonsVideoSpec) -> bool:
    """Write the video tree for ``spec`` into ``root`` once; returns False when the same tree is already there."""
    return generate_once(root, asdict(spec), partial(_write_videos, spec=spec), "persons videos")


class PartLabelledVideoDataset(PersonPairDataset):
    """Evaluation frames of the persons videos, each with its target's body parts and identity (``target_parts``,
    ``target_identity``), for the appearance-transfer metric, as :class:`datamodules.persons.PartLabelledPairDataset`
    does for still persons.

    Args:
        spec: The generation arguments of the tree.
        samples: Frame pairs (targets named ``id_XXXXX/NNNNN.png``).
        **kwargs: The remaining options of :class:`PersonPairDataset` (with ``train=False``).
    """

    def __init__(self, spec: PersonsVideoSpec, samples: list[PairSample], **kwargs: Any) -> None:
        super().__init__(samples, **kwargs)
        if self.train:
            raise ValueError("PartLabelledVideoDataset serves evaluation frames only (train=False)")
        self.spec = spec

    def load(self, index: int, seed: int | None) -> dict[str, Any]:
        item = super().load(index, seed)
        video, frame = item["target_path"].split("/")
        identity = int(video.removeprefix("id_"))
        joints = video_joints(self.spec, identity)[0][int(Path(frame).stem)]
        look = identity_appearance(self.spec.persons, identity)
        item["target_parts"] = torch.from_numpy(
            skeleton_part_labels(joints, look, self.spec.persons.canvas_size, self.image_size))
        item["target_identity"] = torch.tensor(identity)
        return item


class PersonsVideoDataModule(VideoDataModule):
    """Synthetic persons videos, generated once into ``root`` and read as any frame-folder video dataset.

    Args:
        root: Folder of the generated tree.
        image_size: Side of the square training images (32 suits a CPU).
        num_identities: Number of people (one video each); the last ``test_fraction`` are the test videos.
        keyframes: Random poses per person that the motion passes through.
        frames_per_video: Frames of each video.
        test_fraction: Share of the videos held out for testing.
        seed: Generation seed; the tree is a pure function of the generation arguments.
        **kwargs: The remaining options of ``VideoDataModule`` (pose encoding, ``pose_window``, batch size, ...).
    """

    def __init__(
        self,
        root: str = "data/persons_video",
        image_size: int = 32,
        num_identities: int = 200,
        keyframes: int = 4,
        frames_per_video: int = 16,
        test_fraction: float = 0.1,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, image_size=image_size, **kwargs)
        self.spec = PersonsVideoSpec(PersonsSpec(seed, num_identities, keyframes, test_fraction), frames_per_video)

    def prepare_data(self) -> None:
        generate_persons_videos(self.root, self.spec)

    def setup(self, stage: str | None = None) -> None:
        if not check_generated(self.root, asdict(self.spec), "persons videos"):
            raise FileNotFoundError(f"{self.root} has no persons videos yet; call prepare_data() first")
        super().setup(stage)

    def make_dataset(self, split: Split) -> PersonPairDataset:
        """The video datasets; the evaluation split also carries part labels and identities."""
        if split == "train":
            return super().make_dataset(split)
        return PartLabelledVideoDataset(self.spec, self.read_pairs(split), **self.dataset_options(split))
