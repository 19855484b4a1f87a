"""``--ckpt_path last`` across process restarts.

Lightning resolves ``"last"`` from the ``dirpath`` of the current run's ``ModelCheckpoint``. With a logger the
default dirpath is ``<logger root>/version_<N>/checkpoints`` and a new process gets a new version, so Lightning
would find nothing and silently start from scratch. :func:`resolve_last_checkpoint` looks one level up instead: the
newest ``last.ckpt`` of any version of this experiment, or a newer SLURM ``hpc_ckpt_*.ckpt`` (written on
preemption into ``trainer.default_root_dir``). Unless the logger version is fixed, the resumed run logs into a fresh
version directory (no run directory is reused), with its step counter continuing from the checkpoint.
"""

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


def last_checkpoint_candidates(trainer: "pl.Trainer") -> list[Path]:
    """Every ``last*.ckpt`` of this experiment (under each logger version and in explicit checkpoint dirpaths) and
    every ``hpc_ckpt_*.ckpt`` in ``trainer.default_root_dir``."""
    candidates: set[Path] = set(Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt"))
    root = getattr(trainer.logger, "root_dir", None) if trainer.logger is not None else None
    if root is not None and Path(root).is_dir():
        candidates.update(Path(root).glob(f"*/checkpoints/{ModelCheckpoint.CHECKPOINT_NAME_LAST}*.ckpt"))
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None and Path(callback.dirpath).is_dir():
            candidates.update(Path(callback.dirpath).glob(f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}*.ckpt"))
    return sorted(path for path in candidates if path.is_file())


def resolve_last_checkpoint(trainer: "pl.Trainer", ckpt_path: str | None) -> str | None:
    """Replace ``ckpt_path="last"`` by the newest (modification time) of :func:`last_checkpoint_candidates`.

    Any other value is returned unchanged; so is ``"last"`` when no checkpoint exists yet (Lightning then warns and
    starts from scratch, so the flag can be set on the first run of a restartable job).
    """
    if ckpt_path != "last":
        return ckpt_path
    candidates = last_checkpoint_candidates(trainer)
    if not candidates:
        return ckpt_path
    return str(max(candidates, key=lambda path: path.stat().st_mtime_ns))
