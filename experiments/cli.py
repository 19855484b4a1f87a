"""The condiff LightningCLI behind ``experiments.fit`` and ``experiments.test``.

Model and data are given in subclass mode (``class_path``/``init_args``), so one entry point serves SDM, PIDM and
the segmenter. Facts about the data reach the model through instantiation-time links (:data:`DATA_TO_MODEL`): each
link applies when the DataModule exposes the property **and** the chosen model accepts the argument, and is
skipped otherwise (jsonargparse's behaviour in subclass mode). A linked value always wins over a value written in
the model config; models validate that what they need arrived.

Every run starts from :data:`SHARED_CALLBACKS` (``configs/callbacks/training.yaml``), read as the subcommand's
default config: the callbacks all training runs share. An experiment config adds its own (checkpointing, EMA,
sample grids, with its numbers) with ``trainer.callbacks+:``, jsonargparse's list append, and a later config or
``--trainer.callbacks+=...`` appends more. A plain ``trainer.callbacks:`` replaces the whole list, as in a run's
saved ``config.yaml``, which holds the resolved list.
"""

import sys
from pathlib import Path
from typing import Any

from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.rank_zero import rank_zero_warn

from experiments.resume import resolve_last_checkpoint

SHARED_CALLBACKS = Path(__file__).resolve().parents[1] / "configs" / "callbacks" / "training.yaml"
# (DataModule property, model init argument)
DATA_TO_MODEL: tuple[tuple[str, str], ...] = (
    ("num_classes", "num_classes"),  # SDM one-hot width, segmenter classes
    ("has_instances", "instance_edges"),  # SDM instance-edge channel
    ("pose_channels", "pose_channels"),  # PIDM pose channels
)


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config in the run directory without ever overwriting one.

    Lightning's callback raises when ``config.yaml`` exists (e.g. resuming into a fixed logger version). Here the
    first run writes ``config.yaml`` and later runs into the same directory write ``config-1.yaml``,
    ``config-2.yaml``, ... with a warning naming the file.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved or not self.save_to_log_dir:
            return super().setup(trainer, pl_module, stage)
        log_dir = Path(trainer.log_dir)
        name = self.config_filename
        if trainer.is_global_zero:
            stem, suffix = Path(name).stem.split("-")[0], Path(name).suffix
            index = 0
            while (log_dir / name).exists():
                index += 1
                name = f"{stem}-{index}{suffix}"
            if index:
                rank_zero_warn(f"{log_dir / f'{stem}{suffix}'} exists (a run went into this directory before); "
                               f"saving this run's config as {log_dir / name}")
        self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)


class CondiffCLI(LightningCLI):
    """LightningCLI with subclass-mode model and data, data-to-model links and non-clobbering config saving."""

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        # The entry points always pass the subcommand plus sys.argv[1:] explicitly; LightningCLI would warn about that.
        self.config = parser.parse_args(args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in DATA_TO_MODEL:
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Build the model from the config and command line alone, also when ``--ckpt_path`` is given.

        LightningCLI would parse the checkpoint's hyperparameters *over* them: a test-time override such as
        ``--model.init_args.guidance.scale 3`` would silently revert to the training value, and checkpoints whose
        hyperparameters jsonargparse cannot re-parse (dict-valued arguments) would fail to load. Weights still load
        strictly, so a config whose architecture differs from the checkpoint's fails naming the mismatched keys;
        every run saves the config it was trained with as ``config.yaml`` next to its checkpoints.
        """

    def before_fit(self) -> None:
        # "last" must find the previous process's last.ckpt, which lives in an earlier logger version directory.
        config = self.config_init[self.subcommand]
        config.ckpt_path = resolve_last_checkpoint(self.trainer, config.ckpt_path)


def run_cli(subcommand: str, args: list[str] | None = None, **kwargs: Any) -> CondiffCLI:
    """Run ``subcommand`` (``fit``, ``validate``, ``test``, ``predict``) with command-line style ``args``.

    ``args`` defaults to ``sys.argv[1:]``; ``--config`` (repeatable, merged in order), dotted overrides,
    ``--print_config`` and ``--ckpt_path`` work as in any LightningCLI. Extra keyword arguments go to
    :class:`CondiffCLI` (e.g. ``run=False``).
    """
    argv = list(sys.argv[1:] if args is None else args)
    return CondiffCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunConfigSaver,
        parser_kwargs={subcommand: {"default_config_files": [str(SHARED_CALLBACKS)]}},
        args=[subcommand, *argv],
        **kwargs,
    )
