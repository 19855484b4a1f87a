"""Shared machinery of the pose-guided person datasets: posed images, source/target pairs, augmentation, loaders."""

from __future__ import annotations

import csv
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import albumentations.augmentations.crops.functional as album_crops
import albumentations.augmentations.geometric.functional as album_geometric
import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datamodules.image_files import read_rgb
from datamodules.image_sets import ImageSetFingerprint
from datamodules.keypoints import load_keypoints_txt, load_patn_csv, resize_keypoints, transform_keypoints
from datamodules.pose_rendering import POSE_CHANNELS, PoseEncoding, render_pose
from datamodules.loaders import DataLoaderSettings
from datamodules.bad_samples import BadSamplePolicy, GuardedDataset
from datamodules.samplers import evaluation_sampler

Split = Literal["train", "test"]


@dataclass(frozen=True)
class PosedImage(ABC):
    """A person photo plus the source of its keypoints; ``name`` is the path as the pair list spells it."""

    name: str
    image_path: Path

    @abstractmethod
    def keypoints(
        self,
        native_size: tuple[int, int],
        image_size: tuple[int, int],
        scale_size: tuple[int, int] | None,
        crop: tuple[int, int],
    ) -> np.ndarray:
        """Keypoints ``(18, 2)`` for the photo (stored at ``native_size``) resized to ``image_size``, then
        optionally up-scaled to ``scale_size`` and cropped at ``crop`` = (x, y)."""

    def neighbour(self, offset: int) -> PosedImage:
        """The posed frame ``offset`` frames away in its video (for pose windows); a still photo is its own."""
        return self


@dataclass(frozen=True)
class TxtPosedImage(PosedImage):
    """Keypoints in a GFLA/NTED txt file (256-frame with the 40-pixel x offset, independent of the photo size)."""

    pose_path: Path

    def keypoints(self, native_size, image_size, scale_size, crop):
        return transform_keypoints(load_keypoints_txt(self.pose_path), image_size, scale_size=scale_size, crop=crop)


@dataclass(frozen=True)
class CsvPosedImage(PosedImage):
    """Keypoints from a PATN annotation CSV, already in the stored photo's pixel frame."""

    annotation: np.ndarray

    def keypoints(self, native_size, image_size, scale_size, crop):
        return resize_keypoints(self.annotation, native_size, scale_size or image_size, crop=crop)


@dataclass(frozen=True)
class PairSample:
    """One training line: a fixed target and the sources it may be generated from."""

    target: PosedImage
    sources: tuple[PosedImage, ...]


def require_file(path: Path, listed_in: Path) -> Path:
    """Return ``path`` if it exists, else raise naming both it and the list that referenced it."""
    if not path.is_file():
        raise FileNotFoundError(f"{listed_in}: references missing file {path}")
    return path


def read_patn_pairs(annotation_file: Path, pair_file: Path, image_dir: Path) -> list[PairSample]:
    """Parse a PATN split: ``from,to`` pairs (source, target) over photos in ``image_dir`` annotated in a CSV.

    Raises:
        FileNotFoundError: if a file is missing (naming the list that referenced it).
        ValueError: on a missing column, or a pair naming an image without annotation (naming the files).
    """
    annotations = load_patn_csv(annotation_file)
    require_file(pair_file, image_dir.parent)
    images: dict[str, CsvPosedImage] = {}

    def posed(name: str) -> CsvPosedImage:
        if name not in images:
            if name not in annotations:
                raise ValueError(f"{pair_file}: image {name!r} has no keypoints in {annotation_file}")
            images[name] = CsvPosedImage(name, require_file(image_dir / name, pair_file), annotations[name])
        return images[name]

    with pair_file.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"from", "to"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{pair_file}: expected columns 'from,to', got header {reader.fieldnames}")
        samples = [PairSample(posed(row["to"]), (posed(row["from"]),)) for row in reader]
    if not samples:
        raise ValueError(f"{pair_file}: no pairs listed")
    return samples


def pair_name(source_name: str, target_name: str) -> str:
    """Name of a (source, target) person pair from the names its pair list gives (paths relative to the data).

    ``<source>_to_<target>``, each name without its suffix and with folders joined by ``_`` (persons' images
    are ``img/id_00012/03.png``, so stems alone would repeat).
    """
    flat = [Path(name).with_suffix("").as_posix().replace("/", "_") for name in (source_name, target_name)]
    return "_to_".join(flat)


class PersonPairDataset(GuardedDataset):
    """Source/target person pairs rendered into the batch format of the person DataModules.

    Every random choice of a fetch (source, flip, scale and crop) is drawn from a generator seeded with the sample's
    seed (see :class:`datamodules.bad_samples.GuardedDataset`), so augmentations are reproducible whatever the workers.

    Args:
        samples: pair lines to draw from.
        image_size: ``(H, W)`` of the returned images and poses.
        pose_encoding: how keypoints become pose channels.
        heatmap_sigma: Gaussian sigma in pixels for ``heatmap18``.
        train: draw the source uniformly per fetch, augment, and (with ``both_directions``) yield both directions;
            otherwise use the first source with no augmentation.
        both_directions: in training, let each line yield source->target and target->source samples.
        scale_augmentation: upper bound of the random up-scale ``s ~ U(0, scale_augmentation)`` before cropping back.
        flip_prob: probability of one horizontal flip applied jointly to both images and both rendered poses.
        on_bad_sample: ``"stop"`` or ``"skip"`` on an unreadable image or pose file.
        pose_window: poses per target (odd): a still pair has one, so ``target_pose`` repeats it this many times.
    """

    def __init__(
        self,
        samples: list[PairSample],
        image_size: tuple[int, int],
        pose_encoding: PoseEncoding,
        heatmap_sigma: float,
        train: bool,
        both_directions: bool,
        scale_augmentation: float,
        flip_prob: float,
        on_bad_sample: BadSamplePolicy = "stop",
        pose_window: int = 1,
    ) -> None:
        super().__init__(on_bad_sample)
        self.pose_window = pose_window
        self.samples = samples
        self.image_size = image_size
        self.pose_encoding = pose_encoding
        self.heatmap_sigma = heatmap_sigma
        self.train = train
        self.directions = 2 if train and both_directions else 1
        self.scale_augmentation = scale_augmentation if train else 0.0
        self.flip_prob = flip_prob if train else 0.0

    def __len__(self) -> int:
        return len(self.samples) * self.directions

    def describe(self, index: int) -> str:
        sample = self.samples[index // self.directions]
        return f"target {sample.target.image_path} with sources {[str(s.image_path) for s in sample.sources]}"

    def load(self, index: int, seed: int | None) -> dict[str, torch.Tensor | str]:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        sample = self.samples[index // self.directions]
        if self.train:
            source = sample.sources[int(torch.randint(len(sample.sources), (), generator=generator))]
        else:
            source = sample.sources[0]
        target = sample.target
        if index % self.directions == 1:
            source, target = target, source
        flip = self.flip_prob > 0 and float(torch.rand((), generator=generator)) < self.flip_prob
        source_image, source_pose = self._load(source, flip, generator)
        half = self.pose_window // 2
        window = [target.neighbour(offset) for offset in range(-half, half + 1)]
        target_image, target_pose = self._load(target, flip, generator, window)
        return {
            "source": source_image,
            "target": target_image,
            "source_pose": source_pose,
            "target_pose": target_pose,
            "source_path": source.name,
            "target_path": target.name,
        }

    def _random_geometry(self, generator: torch.Generator | None) -> tuple[tuple[int, int], tuple[int, int]]:
        """The official up-scale-and-crop parameters: ``(scale_H, scale_W)`` and crop ``(x, y)``."""
        height, width = self.image_size
        scale = float(torch.rand((), generator=generator)) * self.scale_augmentation
        scale_height, scale_width = int(height * (1.0 + scale)), int(width * (1.0 + scale))
        crop_x = int(torch.randint(scale_width - width + 1, (), generator=generator))
        crop_y = int(torch.randint(scale_height - height + 1, (), generator=generator))
        return (scale_height, scale_width), (crop_x, crop_y)

    def _load(
        self, posed: PosedImage, flip: bool, generator: torch.Generator | None, window: Sequence[PosedImage] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The image and its pose; with a ``window`` of posed frames (``posed`` among them), their poses rendered
        under the same geometry and concatenated on channels (a still photo's window repeats its one pose)."""
        height, width = self.image_size
        image = read_rgb(posed.image_path)
        native_size = image.shape[:2]
        if native_size != self.image_size:
            # PIL's antialiased bicubic, as the official data preparation and evaluation GT use.
            image = np.array(Image.fromarray(image).resize((width, height), Image.BICUBIC))
        scale_size, crop = self._random_geometry(generator) if self.scale_augmentation > 0 else (None, (0, 0))
        if scale_size is not None:
            image = album_geometric.resize(image, scale_size, cv2.INTER_CUBIC)
            image = album_crops.crop(image, crop[0], crop[1], crop[0] + width, crop[1] + height)

        def render(frame: PosedImage) -> torch.Tensor:
            keypoints = frame.keypoints(native_size, self.image_size, scale_size, crop)
            return render_pose(keypoints, height, width, self.pose_encoding, self.heatmap_sigma)

        pose = render(posed)
        if window and any(frame is not posed for frame in window):
            pose = torch.cat([pose if frame is posed else render(frame) for frame in window])
        elif window:
            pose = pose.repeat(len(window), 1, 1)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(127.5).sub(1.0)
        if flip:
            # Flipped as rendered pixels, as the official loader does; rendering mirrored keypoints instead would
            # rasterise differently (truncated joint coordinates, rounded limb angles) and miss it by a pixel.
            tensor, pose = tensor.flip(-1), pose.flip(-1)
        return tensor, pose


class ReferenceImageDataset(Dataset):
    """Photos alone, each once, at the evaluation size and without augmentation: a FID real set.

    Items are ``{"image": (3, H, W) float32 in [-1, 1], "path": str}``, resized like the pair images (PIL's
    antialiased bicubic); an unreadable file raises naming it.

    Args:
        paths: the photos, in the order they are served.
        image_size: ``(H, W)`` of the returned images.
    """

    def __init__(self, paths: list[Path], image_size: tuple[int, int]) -> None:
        self.paths = paths
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        path = self.paths[index]
        image = read_rgb(path)
        if image.shape[:2] != self.image_size:
            height, width = self.image_size
            image = np.array(Image.fromarray(image).resize((width, height), Image.BICUBIC))
        return {"image": torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0), "path": str(path)}


class PersonPairDataModule(DataLoaderSettings, pl.LightningDataModule, ABC):
    """Base DataModule for pose-guided person datasets; subclasses only read their pair lists.

    Args:
        root: dataset root folder.
        image_size: image height in pixels; the width is the same (stretched) or follows ``keep_aspect``.
        keep_aspect: keep the dataset's native aspect ratio instead of stretching to a square.
        pose_encoding: ``official20`` (PIDM's skeleton + limb distance maps) or ``heatmap18`` (Gaussian heatmaps).
        heatmap_sigma: Gaussian sigma in pixels for ``heatmap18``.
        both_directions: in training, each pair also yields its reverse (target -> source).
        scale_augmentation: training up-scale bound ``s ~ U(0, scale_augmentation)`` before a random crop back.
        flip_prob: training probability of a joint horizontal flip of both images and poses.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes.
        pin_memory: pin batches in page-locked memory.
        persistent_workers: keep workers alive between epochs (only with ``num_workers > 0``).
        on_bad_sample: on an unreadable image or pose file, ``"stop"`` with an error naming it, or ``"skip"`` the
            pair with a warning naming it and serve the next pair instead.
        pose_window: K (odd) poses per target, concatenated on channels, centred on the target frame (DreamPose
            uses 5 consecutive video poses); still-image pairs repeat the target's one pose K times.
    """

    #: Native width / height of the dataset's photos, used with ``keep_aspect``.
    native_aspect: float = 1.0

    def __init__(
        self,
        root: str,
        image_size: int = 256,
        keep_aspect: bool = False,
        pose_encoding: PoseEncoding = "official20",
        heatmap_sigma: float = 6.0,
        both_directions: bool = True,
        scale_augmentation: float = 0.05,
        flip_prob: float = 0.5,
        batch_size: int = 8,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        on_bad_sample: BadSamplePolicy = "stop",
        pose_window: int = 1,
    ) -> None:
        super().__init__()
        if pose_encoding not in POSE_CHANNELS:
            raise ValueError(f"unknown pose_encoding {pose_encoding!r}; choose one of {sorted(POSE_CHANNELS)}")
        if pose_window < 1 or pose_window % 2 == 0:
            raise ValueError(f"pose_window must be odd and at least 1 (poses centred on the target), got {pose_window}")
        self.pose_window = pose_window
        self.root = Path(root)
        width = round(image_size * self.native_aspect) if keep_aspect else image_size
        self.image_size = (image_size, width)
        self.pose_encoding = pose_encoding
        self.heatmap_sigma = heatmap_sigma
        self.both_directions = both_directions
        self.scale_augmentation = scale_augmentation
        self.flip_prob = flip_prob
        self.init_loader_settings(batch_size, num_workers, pin_memory, persistent_workers)
        self.on_bad_sample = on_bad_sample
        self.datasets: dict[Split, PersonPairDataset] = {}

    @property
    def pose_channels(self) -> int:
        """Pose channels per target: ``pose_window`` x (20 for ``official20``, 18 for ``heatmap18``)."""
        return self.pose_window * POSE_CHANNELS[self.pose_encoding]

    @abstractmethod
    def read_pairs(self, split: Split) -> list[PairSample]:
        """Parse the split's pair list, checking that every referenced file exists."""

    def setup(self, stage: str | None = None) -> None:
        splits: tuple[Split, ...] = ("train", "test") if stage in (None, "fit") else ("test",)
        for split in splits:
            if split not in self.datasets:
                self.datasets[split] = self.make_dataset(split)

    def dataset_options(self, split: Split) -> dict[str, Any]:
        """Keyword arguments of :class:`PersonPairDataset` for one split, after its pair list."""
        return {
            "image_size": self.image_size,
            "pose_encoding": self.pose_encoding,
            "heatmap_sigma": self.heatmap_sigma,
            "train": split == "train",
            "both_directions": self.both_directions,
            "scale_augmentation": self.scale_augmentation,
            "flip_prob": self.flip_prob,
            "on_bad_sample": self.on_bad_sample,
            "pose_window": self.pose_window,
        }

    def make_dataset(self, split: Split) -> PersonPairDataset:
        """Build the dataset of one split (training behaviour for ``train`` only)."""
        return PersonPairDataset(self.read_pairs(split), **self.dataset_options(split))

    def train_dataloader(self) -> DataLoader:
        return self.training_loader(self.datasets["train"])

    def val_dataloader(self) -> DataLoader:
        return self.evaluation_loader(self.datasets["test"])

    def test_dataloader(self) -> DataLoader:
        return self.evaluation_loader(self.datasets["test"], evaluation_sampler(self.datasets["test"]))

    def fid_reference_images(self, split: Split) -> list[Path]:
        """The split's distinct photos (targets and sources of its pairs, each once, in first-listed order): the
        FID real set, which PIDM's protocol takes from every training image."""
        photos = (posed.image_path for sample in self.read_pairs(split) for posed in (sample.target, *sample.sources))
        return list(dict.fromkeys(photos))

    def fid_reference_fingerprint(self, split: Split) -> ImageSetFingerprint:
        """What identifies :meth:`fid_reference_images` to cached FID statistics: root, file list, count, size."""
        return ImageSetFingerprint.of_files(self.root, self.fid_reference_images(split), self.image_size)

    def fid_reference_dataloader(self, split: Split) -> DataLoader:
        """:meth:`fid_reference_images` at the evaluation size without augmentation, in order, sharded over the
        ranks of a process group with every photo seen exactly once."""
        dataset = ReferenceImageDataset(self.fid_reference_images(split), self.image_size)
        return self.evaluation_loader(dataset, evaluation_sampler(dataset))
