r"""Coarse images for a refiner: run a trained PIDM first stage over a split's pairs.

    python -m experiments.coarse --ckpt_path runs/pidm_persons/version_0/checkpoints/last.ckpt \
        --split train --out coarse/train [--max_pairs 1000] [--sampler ddim --steps 25 --eta 1 --seed 0]
    python -m experiments.coarse --ckpt_path runs/pidm_persons/version_0/checkpoints/last.ckpt \
        --split test --out coarse/test

The pairs are those the split's evaluation-mode dataset serves (each pair-list line's target with its first
source) of the run's DataModule (``<run>/config.yaml`` beside ``checkpoints/``, or ``--data_config``). Each pair's
image is ``<out>/<source>_to_<target>.png``; its noise is seeded by the pair's name and ``--seed``, so the images do
not depend on batch size, and the test split's images equal the first stage's own test images with the same
sampler. ``<out>/manifest.json`` records the checkpoint (path and SHA-256), sampler, guidance, seed, split, size and
pairs; ``datamodules.refinement.RefinementDataModule`` checks it. An interrupted run continues where it stopped
when started again with the same options; other options on a folder in use are an error unless ``--overwrite true``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from datamodules.person_base import PersonPairDataModule, pair_name
from datamodules.refinement import (
    MANIFEST,
    CoarseImageSet,
    checkpoint_sha256,
    evaluation_pair_dataset,
    evaluation_pairs,
)
from experiments.checkpoint_checks import require_checkpoint_file
from experiments.errors import CommandError, parse_dataclass_options, run_main
from experiments.predict import GuidanceOverride, SamplingOverride, device_for, save_images
from experiments.predict_pidm import guidance_override
from experiments.run_config import datamodule_from_config, run_config_path
from lightning_modules.checkpoint_loading import load_diffusion_module
from lightning_modules.evaluation_io import named_noise
from lightning_modules.pidm import PIDMLitModule
from lightning_modules.refiner import RefinerLitModule


@dataclass
class CoarseOptions:
    """Which first stage, which pairs, how to sample (see the module docstring).

    Args:
        ckpt_path: The first stage's checkpoint (a PIDM model written by ``experiments.fit``).
        out: Folder of the coarse images and their ``manifest.json``.
        split: ``train`` or ``test``.
        data_config: A run config whose ``data`` section names the dataset (default: the checkpoint's run).
        sampling: Sampler settings replacing the checkpoint's (``--sampling.steps 25``).
        guidance: Guidance settings replacing the checkpoint's.
        max_pairs: Only this many pairs, spread evenly over the split's list (a refiner's training set need not
            be all of them).
        batch_size: Pairs sampled together.
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        overwrite: Replace a folder made with other options.
    """

    ckpt_path: Path
    out: Path
    split: Literal["train", "test"] = "train"
    data_config: Path | None = None
    sampling: SamplingOverride = field(default_factory=SamplingOverride)
    guidance: GuidanceOverride = field(default_factory=GuidanceOverride)
    max_pairs: int | None = None
    batch_size: int = 32
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    overwrite: bool = False


def parse_options(argv: Sequence[str] | None = None) -> CoarseOptions:
    return parse_dataclass_options(CoarseOptions, "python -m experiments.coarse", __doc__, argv)


def first_stage(path: Path) -> PIDMLitModule:
    """The PIDM model of ``path`` (a refiner's coarse images come from a first stage, not from another refiner)."""
    require_checkpoint_file(path)
    model = load_diffusion_module(path)
    if not isinstance(model, PIDMLitModule) or isinstance(model, RefinerLitModule):
        raise CommandError(f"{path} holds a {type(model).__name__}; coarse images come from a PIDM first stage")
    return model


def person_datamodule(options: CoarseOptions) -> PersonPairDataModule:
    config = options.data_config or run_config_path(options.ckpt_path)
    try:
        datamodule = datamodule_from_config(config)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(f"{error}; give the run config of the data with --data_config") from None
    if not isinstance(datamodule, PersonPairDataModule):
        raise CommandError(f"{config}: the data is a {type(datamodule).__name__}, not a person-pair DataModule")
    return datamodule


def prepare_folder(out: Path, wanted: CoarseImageSet, overwrite: bool) -> None:
    """Start ``out`` for ``wanted`` images, continue it when it holds the same settings, or refuse."""
    if CoarseImageSet.path(out).is_file():
        existing = CoarseImageSet.read(out)
        if existing.settings() == wanted.settings():
            return
        differing = sorted(key for key, value in wanted.settings().items() if existing.settings().get(key) != value)
        if not overwrite:
            raise CommandError(f"{out} holds coarse images made with other {', '.join(differing)}; choose another "
                               "--out or pass --overwrite true to replace them")
        for png in out.glob("*.png"):
            png.unlink()
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CommandError(f"{out} is not empty and holds no {MANIFEST}; choose another --out")
    wanted.write(out)


def run(options: CoarseOptions) -> CoarseImageSet:
    """Write the coarse images of the options' pairs; returns the finished manifest."""
    if options.batch_size < 1 or (options.max_pairs is not None and options.max_pairs < 1):
        raise CommandError("--batch_size and --max_pairs must be at least 1")
    model = first_stage(options.ckpt_path)
    try:
        sampling = model.sampling.overridden(**asdict(options.sampling))
    except ValueError as error:
        raise CommandError(f"--sampling: {error}") from None
    guidance = guidance_override(model, options.guidance)
    datamodule = person_datamodule(options)
    datamodule.prepare_data()
    dataset = evaluation_pair_dataset(datamodule, options.split)
    pairs = evaluation_pairs(dataset.samples)
    count = len(pairs) if options.max_pairs is None else min(options.max_pairs, len(pairs))
    chosen = [round(k * len(pairs) / count) for k in range(count)]  # evenly over the list: every identity
    manifest = CoarseImageSet(
        checkpoint=str(options.ckpt_path), checkpoint_sha256=checkpoint_sha256(options.ckpt_path), split=options.split,
        image_size=list(datamodule.image_size), sampling=asdict(sampling), guidance=asdict(guidance),
        pairs=[pairs[index] for index in chosen],
    )
    prepare_folder(options.out, manifest, options.overwrite)
    todo = [index for index in chosen if not manifest.image_path(options.out, *pairs[index]).is_file()]
    device = device_for(options.accelerator)
    model = model.to(device).eval()
    loader = DataLoader(torch.utils.data.Subset(dataset, todo), batch_size=options.batch_size,
                        num_workers=min(2, datamodule.num_workers))
    shape = (model.image_channels, *datamodule.image_size)
    print(f"{options.split}: {count - len(todo)} of {count} coarse images exist; sampling {len(todo)} with "
          f"{sampling.sampler}-{sampling.steps}")
    for batch in tqdm(loader, desc="coarse batches", unit="batch"):
        names = [pair_name(s, t) for s, t in zip(batch["source_path"], batch["target_path"], strict=True)]
        x_T = named_noise(names, shape, sampling.seed, device=device)
        images = model.generate_batch(batch, sampling=sampling, guidance=guidance, x_T=x_T)
        save_images(images, [options.out / f"{name}.png" for name in names])
    manifest.complete = True
    manifest.write(options.out)
    print(f"wrote {count} coarse images and {MANIFEST} to {options.out}")
    return manifest


def main(argv: Sequence[str] | None = None) -> CoarseImageSet:
    return run(parse_options(argv))


if __name__ == "__main__":
    run_main(main)
