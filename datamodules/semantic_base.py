"""Shared dataset, augmentation and LightningDataModule code for semantic-layout-to-image datasets.

A dataset module describes its classes (a :class:`LabelSpec`) and lists its files per split
(:meth:`SemanticDataModule.find_samples`); everything else lives here. Batches hold raw facts:
``image`` float32 (3, H, W) in [-1, 1], ``label`` int64 (H, W) class ids after the dataset's remap,
``instance`` int64 (H, W) when the dataset has instances, and ``path`` (the image file). One-hot maps and
instance edges are built on the device by the LightningModule.
"""

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import albumentations as A
import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from datamodules.image_files import read_rgb
from datamodules.image_sets import ImageSetFingerprint
from datamodules.palettes import bit_interleaved_palette
from datamodules.loaders import DataLoaderSettings
from datamodules.bad_samples import BadSamplePolicy, GuardedDataset
from datamodules.samplers import evaluation_sampler
from datamodules.semantic_files import (
    INDEX_MAP_INTERPOLATION,
    SemanticSample,
    fit_index_map,
    read_index_map,
)

LabelRemap = Callable[[np.ndarray], np.ndarray]
RAW_LABEL_VALUES = 2**16  # label PNGs hold 8- or 16-bit values
InstanceSource = Literal["none", "file", "label"]
TrainTransform = Literal["random_resized_crop", "resize"]


def shift_other_last(label: np.ndarray, other: int) -> np.ndarray:
    """ADE20K convention: file ids 1..K become classes 0..K-1 and id 0 ("other") becomes class ``other`` (= K)."""
    return np.where(label == 0, other, label - 1)


def replace_value(label: np.ndarray, source: int, target: int) -> np.ndarray:
    """Replace one label value (e.g. COCO-Stuff's 255 "unlabeled" -> 182)."""
    return np.where(label == source, target, label)


def ade_style_remap(num_classes: int) -> LabelRemap:
    """Picklable remap ``id - 1`` with ``0 -> num_classes - 1``."""
    return partial(shift_other_last, other=num_classes - 1)


@dataclass(frozen=True)
class LabelSpec:
    """What a dataset's label maps mean.

    Attributes:
        num_classes: one-hot channels, including the dontcare/"other" class.
        instances: ``"none"``, ``"file"`` (instance maps on disk) or ``"label"`` (the label map doubles as the
            instance map, so edges follow label boundaries).
        remap: applied to the raw file values before validation; ``None`` keeps them.
        class_names: one name per class, when known.
        instance_remap: applied to the raw values of instance map files; ``None`` keeps them.
    """

    num_classes: int
    instances: InstanceSource = "none"
    remap: LabelRemap | None = None
    class_names: tuple[str, ...] | None = None
    instance_remap: LabelRemap | None = None


def to_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """Normalise an ``image_size`` argument to ``(height, width)``."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def build_transform(
    size: tuple[int, int], train: bool, train_transform: TrainTransform, flip: bool, min_crop_fraction: float
) -> A.Compose:
    """Geometric pipeline shared by image and masks (masks always resized nearest, at pixel centres like PIL).

    Images use bicubic when upscaling and area averaging when downscaling (``area_for_downscale``); area averages
    every source pixel like the official repeated box-halving before its final bicubic step, so large
    downscales (2048 -> 512 Cityscapes frames) do not alias.

    ``random_resized_crop`` is the official training resize: the image is scaled (keeping its aspect ratio) so
    that it covers ``s/m`` times the target, with ``m = min(size)`` and ``s`` an integer drawn uniformly from
    ``[m, ceil(m / min_crop_fraction)]``, then randomly cropped to ``size``. For a square target this is "short
    side in [S, ceil(S/0.8)]". ``resize`` (and every evaluation pipeline) squashes the image to ``size``.
    """
    height, width = size
    resize = dict(interpolation=cv2.INTER_CUBIC, mask_interpolation=INDEX_MAP_INTERPOLATION, area_for_downscale="image")
    if train and train_transform == "random_resized_crop":
        short = min(height, width)
        covers = [
            A.SmallestMaxSize(max_size_hw=(math.ceil(height * s / short), math.ceil(width * s / short)), **resize)
            for s in range(short, math.ceil(short / min_crop_fraction) + 1)
        ]
        steps: list = [A.OneOf(covers, p=1.0), A.RandomCrop(height, width)]
    else:
        steps = [A.Resize(height, width, **resize)]
    if train and flip:
        steps.append(A.HorizontalFlip(p=0.5))
    return A.Compose(steps)


class SemanticImageDataset(GuardedDataset):
    """Reads, validates and augments (image, label[, instance]) samples.

    Each fetch re-seeds the pipeline with the sample's seed (see :class:`datamodules.bad_samples.GuardedDataset`), so
    augmentations are reproducible whatever the worker layout.

    Args:
        samples: file triples, in the order they are served.
        spec: label semantics (remap, number of classes, instance source).
        transform: albumentations pipeline applied jointly to the image and masks.
        on_bad_sample: ``"stop"`` or ``"skip"`` on an unreadable or invalid sample.
    """

    def __init__(
        self,
        samples: list[SemanticSample],
        spec: LabelSpec,
        transform: A.Compose,
        on_bad_sample: BadSamplePolicy = "stop",
    ) -> None:
        super().__init__(on_bad_sample)
        self.samples = samples
        self.spec = spec
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def _read_label(self, sample: SemanticSample, image_shape: tuple[int, ...]) -> np.ndarray:
        label = fit_index_map(read_index_map(sample.label), sample.label, image_shape[:2], sample.image, "label map")
        if self.spec.remap is not None:
            label = self.spec.remap(label)
        low, high = int(label.min()), int(label.max())
        if low < 0 or high >= self.spec.num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"label {sample.label} contains class {bad} after remapping; "
                f"valid classes are 0..{self.spec.num_classes - 1}"
            )
        return label

    def _read_instance(self, sample: SemanticSample, label: np.ndarray) -> np.ndarray | None:
        if self.spec.instances == "label":
            return label
        if self.spec.instances == "none":
            return None
        if sample.instance is None:
            raise ValueError(f"image {sample.image} has no instance map")
        instance = fit_index_map(
            read_index_map(sample.instance), sample.instance, label.shape, sample.image, "instance map"
        )
        if self.spec.instance_remap is not None:
            instance = self.spec.instance_remap(instance)
        return instance

    def describe(self, index: int) -> str:
        return f"image {self.samples[index].image}"

    def load(self, index: int, seed: int | None) -> dict[str, torch.Tensor | str]:
        sample = self.samples[index]
        image = read_rgb(sample.image)
        label = self._read_label(sample, image.shape)
        instance = self._read_instance(sample, label)
        # int32 masks: cv2 resizes them losslessly (nearest, pixel centres) and they hold 16-bit instance ids.
        masks = [label.astype(np.int32)] + ([instance.astype(np.int32)] if instance is not None else [])
        self.transform.set_random_seed(int(torch.randint(2**62, ())) if seed is None else seed)
        out = self.transform(image=image, masks=masks)
        item: dict[str, torch.Tensor | str] = {
            "image": torch.from_numpy(out["image"]).permute(2, 0, 1).float().div(127.5).sub(1.0),
            "label": torch.from_numpy(np.ascontiguousarray(out["masks"][0])).long(),
            "path": str(sample.image),
        }
        if instance is not None:
            item["instance"] = torch.from_numpy(np.ascontiguousarray(out["masks"][1])).long()
        return item


class SemanticDataModule(DataLoaderSettings, pl.LightningDataModule, abc.ABC):
    """Base LightningDataModule for semantic-image datasets; subclasses list files and describe labels.

    Args:
        root: dataset location.
        spec: label semantics of the dataset.
        image_size: output size, an int (square) or ``(height, width)``.
        train_split: split used for training.
        val_split: split used for validation during fitting.
        test_split: split used by ``test`` and ``predict``.
        batch_size: samples per batch (per process).
        num_workers: dataloader worker processes.
        pin_memory: pin host memory for faster transfer to the GPU.
        persistent_workers: keep workers alive between epochs (only when ``num_workers > 0``).
        train_transform: ``"random_resized_crop"`` (official random short-side resize + crop) or ``"resize"``
            (squash to ``image_size``).
        flip: random horizontal flip (p = 0.5) during training, applied to image, label and instance alike.
        min_crop_fraction: smallest crop/short-side ratio of ``random_resized_crop`` (official 0.8).
        on_bad_sample: on an unreadable or invalid sample, ``"stop"`` with an error naming it, or ``"skip"`` it
            with a warning naming it and serve the next sample instead.
    """

    def __init__(
        self,
        root: str,
        spec: LabelSpec,
        image_size: int | tuple[int, int],
        train_split: str,
        val_split: str,
        test_split: str,
        batch_size: int = 4,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        train_transform: TrainTransform = "random_resized_crop",
        flip: bool = True,
        min_crop_fraction: float = 0.8,
        on_bad_sample: BadSamplePolicy = "stop",
    ) -> None:
        super().__init__()
        if not 0.0 < min_crop_fraction <= 1.0:
            raise ValueError(f"min_crop_fraction must be in (0, 1], got {min_crop_fraction}")
        if train_transform not in ("random_resized_crop", "resize"):
            raise ValueError(f"train_transform must be 'random_resized_crop' or 'resize', got {train_transform!r}")
        self.root = root
        self.spec = spec
        self.image_size = to_hw(image_size)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.init_loader_settings(batch_size, num_workers, pin_memory, persistent_workers)
        self.train_transform = train_transform
        self.flip = flip
        self.min_crop_fraction = min_crop_fraction
        self.on_bad_sample = on_bad_sample
        self.datasets: dict[str, SemanticImageDataset] = {}

    @property
    def num_classes(self) -> int:
        """One-hot channels, including the dontcare/"other" class."""
        return self.spec.num_classes

    @property
    def has_instances(self) -> bool:
        """Whether batches carry an ``instance`` map (and the model gets an instance-edge channel)."""
        return self.spec.instances != "none"

    @property
    def label_channels(self) -> int:
        """Channels of the model's condition: one-hot classes plus one instance-edge channel if any."""
        return self.num_classes + int(self.has_instances)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """Class names indexed by (remapped) class id, when known."""
        return self.spec.class_names

    def raw_label_lut(self) -> torch.Tensor:
        """The class id of every raw value a label PNG can hold (0..65535), after the dataset's remap.

        int16 of length 65536, -1 where a raw value is no class of this dataset. The SDM module stores it in its
        checkpoints, so label maps given to ``predict`` decode as in training wherever the checkpoint goes.
        """
        raw = np.arange(RAW_LABEL_VALUES, dtype=np.int64)
        classes = raw if self.spec.remap is None else self.spec.remap(raw)
        valid = (classes >= 0) & (classes < self.spec.num_classes)
        return torch.from_numpy(np.where(valid, classes, -1).astype(np.int16))

    @property
    def palette(self) -> torch.Tensor:
        """Fixed uint8 colours ``(num_classes, 3)`` for visualising label maps."""
        return bit_interleaved_palette(self.num_classes)

    @abc.abstractmethod
    def find_samples(self, split: str) -> list[SemanticSample]:
        """List the paired files of a split (pairing by file name; unmatched files raise)."""

    def _dataset(self, role: str) -> SemanticImageDataset:
        if role not in self.datasets:
            samples = self.find_samples(self.splits[role])
            transform = build_transform(
                self.image_size, role == "train", self.train_transform, self.flip, self.min_crop_fraction
            )
            self.datasets[role] = SemanticImageDataset(samples, self.spec, transform, self.on_bad_sample)
        return self.datasets[role]

    def setup(self, stage: str) -> None:
        roles = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}[stage]
        for role in roles:
            self._dataset(role)
        if "train" in roles and len(self.datasets["train"]) < self.batch_size:
            raise ValueError(
                f"training split {self.splits['train']!r} under {self.root} has {len(self.datasets['train'])} "
                f"samples, fewer than batch_size={self.batch_size} (the last incomplete batch is dropped)"
            )

    def train_dataloader(self) -> DataLoader:
        return self.training_loader(self._dataset("train"))

    def val_dataloader(self) -> DataLoader:
        return self.evaluation_loader(self._dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self.evaluation_loader(self._dataset("test"), evaluation_sampler(self._dataset("test")))

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def image_fingerprint(self, role: str = "test") -> ImageSetFingerprint:
        """What identifies the images of a role's split (``train``, ``val`` or ``test``) to cached FID statistics:
        root, file list, count and the size they are served at. The test command's FID real set is ``test``."""
        if role not in self.splits:
            raise ValueError(f"unknown role {role!r}; choose one of {sorted(self.splits)}")
        samples = self._dataset(role).samples
        return ImageSetFingerprint.of_files(self.root, [sample.image for sample in samples], self.image_size)
