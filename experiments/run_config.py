"""What a run directory of ``experiments.fit`` says about its data: ``<run>/config.yaml`` beside ``checkpoints/``."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import yaml
from jsonargparse import ArgumentParser


def run_config_path(ckpt_path: Path) -> Path:
    """Where ``experiments.fit`` writes the run's config: ``<run>/config.yaml`` beside ``<run>/checkpoints/``."""
    return Path(ckpt_path).resolve().parent.parent / "config.yaml"


def datamodule_from_config(path: Path) -> pl.LightningDataModule:
    """The DataModule of a run config's ``data`` section, built but not set up (nothing is read yet).

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: It has no ``data`` section, or the section does not build.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no run config at {path}")
    config = yaml.safe_load(Path(path).read_text())
    if not isinstance(config, dict) or "data" not in config:
        raise ValueError(f"{path} has no 'data' section")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningDataModule, "data")
    try:
        return parser.instantiate(parser.parse_object({"data": config["data"]})).data
    except Exception as error:  # a DataModule of a package not installed here, or one that no longer parses
        raise ValueError(f"the data section of {path} cannot be built ({error})") from None
