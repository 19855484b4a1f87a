"""Data of the refining stage (``lightning_modules.refiner``): a person dataset's pairs plus each pair's coarse image.

Coarse images come from one of two places:

- a folder written by ``python -m experiments.coarse`` (a trained first stage run over a split's pairs): one PNG per
  pair, ``<source>_to_<target>.png`` (``datamodules.person_base.pair_name``), and ``manifest.json``
  recording the first-stage checkpoint (path and SHA-256), sampler, guidance, seed, split, image size and pairs.
  The DataModule refuses a folder made by another checkpoint than ``first_stage``, for another image size, for
  pairs that are not the split's, or left incomplete; the test split must be covered entirely. This is what a
  refiner is for: it learns to correct the first stage's own mistakes;
- degraded targets (blur, noise, colour shifts; :class:`Degradation`), a bootstrap for training before a first
  stage exists. A refiner trained on them learns to restore detail, not to correct a first stage's colours or
  pose errors; fine-tune it on coarse images (``model.init_args.init_from``) once they exist.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.image_files import read_rgb
from datamodules.person_base import PairSample, PersonPairDataModule, PersonPairDataset, Split, pair_name
from datamodules.samplers import evaluation_sampler

MANIFEST = "manifest.json"


@dataclass
class CoarseImageSet:
    """What a folder of coarse images holds and how it was made (its ``manifest.json``).

    Args:
        checkpoint: The first-stage checkpoint's path when the images were made.
        checkpoint_sha256: Its SHA-256: what identifies the first stage.
        split: The dataset split whose pairs were rendered.
        image_size: ``[H, W]`` of the images.
        sampling: The first stage's sampler settings (sampler, steps, eta, seed).
        guidance: The first stage's guidance settings.
        pairs: ``[source, target]`` names as the split's pair list spells them, in order.
        complete: Whether every pair's image was written.
    """

    checkpoint: str
    checkpoint_sha256: str
    split: str
    image_size: list[int]
    sampling: dict[str, Any]
    guidance: dict[str, Any]
    pairs: list[list[str]] = field(default_factory=list)
    complete: bool = False

    @staticmethod
    def path(folder: str | Path) -> Path:
        return Path(folder) / MANIFEST

    @classmethod
    def read(cls, folder: str | Path) -> CoarseImageSet:
        """The manifest of ``folder``; raises naming the file when it is missing or not a coarse-image manifest."""
        path = cls.path(folder)
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {MANIFEST}; coarse images are written with `python -m "
                                    "experiments.coarse --ckpt_path <first stage> --split <split> --out <folder>`")
        try:
            return cls(**json.loads(path.read_text()))
        except (TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a coarse-image manifest ({error})") from None

    def write(self, folder: str | Path) -> None:
        path = self.path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(asdict(self), indent=1))
        partial.replace(path)

    def settings(self) -> dict[str, Any]:
        """Everything but the progress: two folders with equal settings hold the same images."""
        return {key: value for key, value in asdict(self).items() if key not in ("complete", "checkpoint")}

    def image_path(self, folder: str | Path, source: str, target: str) -> Path:
        return Path(folder) / f"{pair_name(source, target)}.png"


def checkpoint_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a checkpoint file: what identifies a first stage, wherever the file was moved."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def evaluation_pairs(samples: list[PairSample]) -> list[list[str]]:
    """The (source, target) pairs the split's evaluation-mode dataset serves: each line's first source."""
    return [[sample.sources[0].name, sample.target.name] for sample in samples]


def evaluation_pair_dataset(data: PersonPairDataModule, split: Split,
                            samples: list[PairSample] | None = None) -> PersonPairDataset:
    """The split's pairs (or ``samples`` of it) as evaluation serves them: each line's first source, no
    augmentation; the whole test split comes from the DataModule itself, with its evaluation extras (e.g. the
    persons' part labels)."""
    if split == "test" and samples is None:
        return data.make_dataset("test")
    samples = data.read_pairs(split) if samples is None else samples
    return PersonPairDataset(samples, **{**data.dataset_options(split), "train": False})


def checked_coarse_set(folder: str | Path, split: Split, samples: list[PairSample], image_size: tuple[int, int],
                       first_stage_sha256: str, first_stage: str, whole_split: bool) -> CoarseImageSet:
    """The folder's manifest, checked against the first stage, the image size and the split's pairs.

    Args:
        whole_split: Require every pair of the split (the test protocol); otherwise a subset will do.
    """
    coarse = CoarseImageSet.read(folder)
    where = CoarseImageSet.path(folder)
    if coarse.checkpoint_sha256 != first_stage_sha256:
        raise ValueError(f"{where}: made by {coarse.checkpoint} (sha256 {coarse.checkpoint_sha256[:12]}...), not by "
                         f"first_stage {first_stage} (sha256 {first_stage_sha256[:12]}...); make coarse images with "
                         "the first stage this refiner belongs to")
    if coarse.split != split:
        raise ValueError(f"{where}: coarse images of the {coarse.split!r} split, expected {split!r}")
    if tuple(coarse.image_size) != tuple(image_size):
        raise ValueError(f"{where}: images of size {coarse.image_size}, the data serves {list(image_size)}")
    if not coarse.complete:
        raise ValueError(f"{where}: incomplete (experiments.coarse was interrupted); run the same command again to "
                         "finish it")
    expected = evaluation_pairs(samples)
    known = {tuple(pair) for pair in expected}
    foreign = [pair for pair in coarse.pairs if tuple(pair) not in known]
    if foreign:
        raise ValueError(f"{where}: {len(foreign)} pairs are no pairs of the {split!r} split (e.g. {foreign[0]}); "
                         "the folder was made for other data")
    if whole_split and len({tuple(pair) for pair in coarse.pairs}) != len(known):
        raise ValueError(f"{where}: covers {len(coarse.pairs)} of the {len(known)} {split!r} pairs; the test needs "
                         "all of them (experiments.coarse without --max_pairs)")
    return coarse


@dataclass(frozen=True)
class Degradation:
    """Random degradations of a target that stand in for a first stage's coarse image (bootstrap training).

    Args:
        blur_sigma: Largest Gaussian blur sigma in pixels (drawn uniformly from [0.3, blur_sigma]).
        noise_std: Largest standard deviation of additive Gaussian noise (images in [-1, 1]).
        colour_shift: Largest per-channel gain deviation and offset (uniform in ±colour_shift).
    """

    blur_sigma: float = 1.5
    noise_std: float = 0.15
    colour_shift: float = 0.15

    def __post_init__(self) -> None:
        if self.blur_sigma < 0.3 or self.noise_std < 0 or self.colour_shift < 0:
            raise ValueError(f"degradation needs blur_sigma >= 0.3 and non-negative noise_std and colour_shift, got "
                             f"{self}")

    def __call__(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A degraded copy of ``image`` (C, H, W) in [-1, 1]."""
        def uniform(low: float, high: float, *shape: int) -> Tensor:
            return low + (high - low) * torch.rand(shape or (), generator=generator)

        sigma = float(uniform(0.3, self.blur_sigma))
        kernel = 2 * math.ceil(3 * sigma) + 1
        out = TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])
        channels = image.shape[0]
        gain = 1 + uniform(-self.colour_shift, self.colour_shift, channels, 1, 1)
        offset = uniform(-self.colour_shift, self.colour_shift, channels, 1, 1)
        noise = torch.randn(image.shape, generator=generator) * float(uniform(0.0, self.noise_std))
        return (out * gain + offset + noise).clamp(-1, 1)


def flip_pair(item: dict[str, Any]) -> dict[str, Any]:
    """The item mirrored left-right: images and rendered poses as pixels, as the person datasets flip."""
    return {key: value.flip(-1) if isinstance(value, Tensor) and value.ndim == 3 else value
            for key, value in item.items()}


class CoarsePairDataset(Dataset):
    """A pair dataset's items plus ``coarse``, read from a folder of ``experiments.coarse`` (or, with a
    :class:`Degradation`, made from the target).

    Args:
        pairs: The person pairs in evaluation mode (each line's first source, no augmentation), or any pair
            dataset with a ``degradation``.
        folder: The coarse images' folder (``<source>_to_<target>.png``); None with ``degradation``.
        degradation: Make the coarse image by degrading the target instead.
        flip_prob: Probability of one joint horizontal flip of every image and pose (training).
    """

    def __init__(self, pairs: Dataset, folder: str | Path | None = None, degradation: Degradation | None = None,
                 flip_prob: float = 0.0) -> None:
        if (folder is None) == (degradation is None):
            raise ValueError("give exactly one of a coarse folder and a degradation")
        self.pairs = pairs
        self.folder = None if folder is None else Path(folder)
        self.degradation = degradation
        self.flip_prob = flip_prob

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.pairs[index])
        if self.folder is None:
            item["coarse"] = self.degradation(item["target"])
        else:
            path = self.folder / f"{pair_name(item['source_path'], item['target_path'])}.png"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing coarse image of {item['source_path']} -> "
                                        f"{item['target_path']} (listed in {self.folder / MANIFEST})")
            pixels = torch.from_numpy(read_rgb(path)).permute(2, 0, 1).float().div(127.5).sub(1.0)
            if pixels.shape != item["target"].shape:
                raise ValueError(f"{path}: size {tuple(pixels.shape[1:])}, the targets are "
                                 f"{tuple(item['target'].shape[1:])}")
            item["coarse"] = pixels
        if self.flip_prob > 0 and float(torch.rand(())) < self.flip_prob:
            item = flip_pair(item)
        return item


class RefinementDataModule(pl.LightningDataModule):
    """A person DataModule's pairs with coarse images, for training and testing a refiner.

    Training reads ``train_coarse`` (each listed pair with its first-stage image, flipped at random) or, without it,
    degrades the targets of the person DataModule's own (augmented) training pairs. Validation grids and the test
    use ``test_coarse`` (all test pairs), or degraded test targets for grids when only ``degradation`` is given.

    Args:
        data: The person DataModule whose pairs are refined (its batch size, workers and image size apply).
        first_stage: The first-stage checkpoint the coarse folders must come from (compared by SHA-256).
        train_coarse: Folder of ``experiments.coarse --split train`` (a subset of the pairs will do).
        test_coarse: Folder of ``experiments.coarse --split test`` (every test pair).
        degradation: Bootstrap: degraded targets as coarse images where no folder is given.
        flip_prob: Training probability of a joint horizontal flip (coarse folders).
    """

    def __init__(
        self,
        data: PersonPairDataModule,
        first_stage: str | None = None,
        train_coarse: str | None = None,
        test_coarse: str | None = None,
        degradation: Degradation | None = None,
        flip_prob: float = 0.5,
    ) -> None:
        super().__init__()
        if (train_coarse is not None or test_coarse is not None) and first_stage is None:
            raise ValueError("train_coarse/test_coarse need first_stage: the checkpoint that made them (their "
                             "manifest.json must name the same file contents)")
        if train_coarse is None and test_coarse is None and degradation is None:
            raise ValueError("RefinementDataModule needs coarse images: train_coarse/test_coarse folders of "
                             "experiments.coarse, or a degradation to bootstrap from the targets")
        self.data = data
        self.first_stage = first_stage
        self.train_coarse = train_coarse
        self.test_coarse = test_coarse
        self.degradation = degradation
        self.flip_prob = flip_prob
        self.datasets: dict[str, CoarsePairDataset] = {}
        self._first_stage_sha256: str | None = None

    @property
    def pose_channels(self) -> int:
        return self.data.pose_channels

    @property
    def pose_window(self) -> int:
        return self.data.pose_window

    def prepare_data(self) -> None:
        self.data.prepare_data()

    def first_stage_sha256(self) -> str:
        if self._first_stage_sha256 is None:
            if not Path(self.first_stage).is_file():
                raise FileNotFoundError(f"first_stage: no checkpoint at {self.first_stage}")
            self._first_stage_sha256 = checkpoint_sha256(self.first_stage)
        return self._first_stage_sha256

    def coarse_dataset(self, split: Split, folder: str) -> CoarsePairDataset:
        """The split's pairs listed in ``folder``'s checked manifest (the whole test split), with their coarse
        images; training pairs without the person DataModule's random sources."""
        samples = self.data.read_pairs(split)
        coarse = checked_coarse_set(folder, split, samples, self.data.image_size, self.first_stage_sha256(),
                                    self.first_stage, whole_split=split == "test")
        listed = {tuple(pair) for pair in coarse.pairs}
        kept = None if split == "test" else [sample for sample in samples
                                             if (sample.sources[0].name, sample.target.name) in listed]
        return CoarsePairDataset(evaluation_pair_dataset(self.data, split, kept), folder=folder,
                                 flip_prob=self.flip_prob if split == "train" else 0.0)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and "train" not in self.datasets:
            if self.train_coarse is not None:
                self.datasets["train"] = self.coarse_dataset("train", self.train_coarse)
            elif self.degradation is not None:
                self.datasets["train"] = CoarsePairDataset(self.data.make_dataset("train"),
                                                           degradation=self.degradation)
            else:
                raise ValueError("training a refiner needs train_coarse (experiments.coarse --split train) or a "
                                 "degradation")
        if "test" not in self.datasets:
            if self.test_coarse is not None:
                self.datasets["test"] = self.coarse_dataset("test", self.test_coarse)
            elif stage == "test":
                raise ValueError("testing a refiner needs test_coarse: the first stage's images of every test pair "
                                 "(python -m experiments.coarse --split test), or chain the two models with "
                                 "`python -m experiments.test ... --refiner <refiner.ckpt>`")
            elif self.degradation is None:
                raise ValueError("validation grids need test_coarse (experiments.coarse --split test) or a "
                                 "degradation of the test targets")
            else:  # validation grids only
                self.datasets["test"] = CoarsePairDataset(self.data.make_dataset("test"), degradation=self.degradation)

    def train_dataloader(self) -> DataLoader:
        return self.data.training_loader(self.datasets["train"])

    def val_dataloader(self) -> DataLoader:
        return self.data.evaluation_loader(self.datasets["test"])

    def test_dataloader(self) -> DataLoader:
        return self.data.evaluation_loader(self.datasets["test"], evaluation_sampler(self.datasets["test"]))

    def fid_reference_fingerprint(self, split: Split):
        return self.data.fid_reference_fingerprint(split)

    def fid_reference_dataloader(self, split: Split) -> DataLoader:
        return self.data.fid_reference_dataloader(split)
