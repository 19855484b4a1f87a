"""``--ckpt_path last`` across process restarts.

Lightning resolves ``"last"`` from the ``dirpath`` of the current run's ``ModelCheckpoint``. With a logger the
default dirpath is ``<logger root>/version_<N>/checkpoints`` and a new process gets a new version, so Lightning
would find nothing and silently start from scratch. :func:`resolve_last_checkpoint` looks one level up instead: the
newest ``last.ckpt`` of any version of this experiment, or a newer SLURM ``hpc_ckpt_*.ckpt`` (written on
preemption into ``trainer.default_root_dir``).

The resumed run then continues in the run directory of that checkpoint (:func:`continue_in_run_directory`): its
checkpoints, grids and TensorBoard events go on in the same ``version_<N>/`` (a logger version fixed in the config,
as the SLURM script's ``version_0``, is kept), with the step counter continuing from the checkpoint. The new event
file starts by telling TensorBoard to drop the interrupted run's events from the checkpoint's step on, so every tag
shows one curve. A checkpoint given by its path starts a new version directory instead (a branch: the original
run's later checkpoints stay as they are).
"""

import re
from pathlib import Path

import pytorch_lightning as pl
from jsonargparse import Namespace
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import instantiate_class
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from experiments.checkpoint_checks import read_checkpoint


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


def run_version_of(checkpoint: str | Path, logger: Logger | None) -> int | str | None:
    """The version of ``logger`` whose run directory holds ``checkpoint``: ``3`` for
    ``<root>/version_3/checkpoints/last.ckpt`` (another folder name as it is), None when it lies outside the
    logger's root directory."""
    root = getattr(logger, "root_dir", None)
    if root is None:
        return None
    try:
        parts = Path(checkpoint).absolute().relative_to(Path(root).absolute()).parts
    except ValueError:
        return None
    if len(parts) < 2:
        return None
    numbered = re.fullmatch(r"version_(\d+)", parts[0])
    return int(numbered[1]) if numbered else parts[0]


def continue_in_run_directory(trainer: "pl.Trainer", logger_config: object, checkpoint: str) -> None:
    """Give ``trainer`` a logger like its own that continues the run of ``checkpoint``.

    Its version is the configured one, else the one whose directory holds ``checkpoint``; a TensorBoard logger also
    gets the checkpoint's step as ``purge_step`` (its first event tells TensorBoard to drop the interrupted run's
    events from that step on). Nothing changes when the checkpoint lies outside the logger's directory and no
    version is configured (the run gets a new version directory), or for a list of loggers or none.

    Args:
        trainer: a trainer whose run has not started (its logger has created nothing yet).
        logger_config: the config's ``trainer.logger`` (``class_path`` and ``init_args``).
        checkpoint: the checkpoint the run resumes from.
    """
    if not isinstance(logger_config, Namespace) or "class_path" not in logger_config:
        return
    init_args = (logger_config.get("init_args") or Namespace()).as_dict()
    if init_args.get("version") is None:
        init_args["version"] = run_version_of(checkpoint, trainer.logger)
    if init_args["version"] is None:
        return
    step = (read_checkpoint(checkpoint) or {}).get("global_step")
    if isinstance(trainer.logger, TensorBoardLogger) and init_args.get("purge_step") is None and step is not None:
        init_args["purge_step"] = step
    trainer.logger = instantiate_class((), {"class_path": logger_config.class_path, "init_args": init_args})
