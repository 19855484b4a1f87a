"""``--ckpt_path`` checked before a run starts: the file exists and holds a checkpoint of the model the config builds.

Without these checks a missing file fails deep inside Lightning after the run directory exists, and a checkpoint of
the other model family (a PIDM checkpoint given to an SDM config) fails the strict weight loading with a list of
hundreds of keys.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from pytorch_lightning import LightningModule

from experiments.errors import CommandError

# Values of --ckpt_path that Lightning (or experiments.resume) resolves itself.
CKPT_KEYWORDS = frozenset({"last", "best", "hpc", "registry"})


def require_checkpoint_file(ckpt_path: str | Path) -> Path:
    """``ckpt_path`` as a path; a :class:`~experiments.errors.CommandError` naming it when it is no file."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise CommandError(f"--ckpt_path {path}: no such checkpoint file",
                           "a run's checkpoints are in <save_dir>/<name>/version_<N>/checkpoints/")
    return path


def check_ckpt_path(ckpt_path: str | None, model: LightningModule) -> None:
    """Raise a :class:`~experiments.errors.CommandError` when ``ckpt_path`` names no file, or a checkpoint whose
    stored class (``hyper_parameters._class_path``) is neither ``model``'s class nor related to it by subclassing.

    Keywords, remote paths and checkpoints that name no class (or cannot be read: Lightning's loading then reports
    them) pass.
    """
    if ckpt_path is None or ckpt_path in CKPT_KEYWORDS or ckpt_path.startswith("registry:") or "://" in ckpt_path:
        return
    path = require_checkpoint_file(ckpt_path)
    stored = stored_class_path(path)
    built = type(model)
    stored_class = _import_class(stored) if stored else None
    if stored_class is None or issubclass(built, stored_class) or issubclass(stored_class, built):
        return
    raise CommandError(
        f"--ckpt_path {path} is a checkpoint of {stored}, but the config builds "
        f"{built.__module__}.{built.__qualname__}",
        "give the config the checkpoint was trained with (its run directory's config.yaml)",
    )


def read_checkpoint(path: str | Path) -> dict | None:
    """A checkpoint with its tensors memory-mapped (only its metadata is read from disk); None when it cannot be
    read as one, which Lightning's loading then reports (:class:`experiments.checkpoint_io.CorruptCheckpointError`)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # whatever is wrong with the file, the real load names it
        return None
    return checkpoint if isinstance(checkpoint, dict) else None


def stored_class_path(path: Path) -> str | None:
    """The model class a checkpoint names (``hyper_parameters._class_path``), None when it names none."""
    hparams = (read_checkpoint(path) or {}).get("hyper_parameters")
    class_path = hparams.get("_class_path") if isinstance(hparams, dict) else None
    return class_path if isinstance(class_path, str) else None


def _import_class(class_path: str) -> type | None:
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        return None
    return cls if isinstance(cls, type) else None
