"""What the demo learns from a checkpoint's run: the model, the run's DataModule and the sampler settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from PIL import Image

from experiments.demo.jobs import DemoInputError
from experiments.run_config import datamodule_from_config, run_config_path
from lightning_modules.base import DiffusionLitModule, SamplerSettings

def load_run_datamodule(ckpt_path: Path) -> tuple[pl.LightningDataModule | None, str]:
    """The DataModule of the run's ``config.yaml`` (not set up: nothing is read yet) and a line saying where it
    came from, or None and why there is none."""
    path = run_config_path(ckpt_path)
    if not path.is_file():
        return None, f"no run config at {path}: built-in examples, class ids as names"
    try:
        datamodule = datamodule_from_config(path)
    except ValueError as error:
        return None, f"{error}: built-in examples"
    return datamodule, f"data: {type(datamodule).__name__} from {path}"


def sampler_settings(model: DiffusionLitModule, sampler: str | None, steps: int | None, seed: int | None,
                     eta: float | None = None) -> SamplerSettings:
    """The checkpoint's sampler settings with those chosen on the page replacing them."""
    try:
        return model.sampling.overridden(sampler, None if steps is None else int(steps), eta,
                                         None if seed is None else int(seed))
    except ValueError as error:
        raise DemoInputError(f"sampler settings: {error}") from None


def stretched_rgb(image: np.ndarray, size: tuple[int, int], source: str) -> np.ndarray:
    """An uploaded image (H, W[, 3|4]) as uint8 RGB stretched to ``size`` (PIL bicubic, as ``predict`` reads it)."""
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise DemoInputError(f"{source}: expected an RGB image, got an array of shape {pixels.shape}")
    pixels = pixels[..., :3].astype(np.uint8)
    if pixels.shape[:2] != size:
        pixels = np.array(Image.fromarray(pixels).resize((size[1], size[0]), Image.BICUBIC))
    return pixels
