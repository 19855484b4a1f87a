"""The condiff LightningCLI behind ``experiments.fit`` and ``experiments.test``.

Model and data are given in subclass mode (``class_path``/``init_args``), so one entry point serves SDM, PIDM and
the segmenter. Facts about the data reach the model through instantiation-time links (:data:`DATA_TO_MODEL`): each
link applies when the DataModule exposes the property **and** the chosen model accepts the argument, and is
skipped otherwise (jsonargparse's behaviour in subclass mode). A linked value always wins over a value written in
the model config; models validate that what they need arrived.

Every run starts from :data:`SHARED_CALLBACKS` (``configs/callbacks/training.yaml``), read as the subcommand's
default config: the callbacks all training runs share. An experiment config adds its own (checkpointing, with its
numbers) with ``trainer.callbacks+:``, jsonargparse's list append, and a later config or
``--trainer.callbacks+=...`` appends more. A plain ``trainer.callbacks:`` replaces the whole list, as in a run's
saved ``config.yaml``, which holds the resolved list.

A later config can append to that list or replace it, never change one number of one element. The callbacks whose
numbers later configs change (the smoke overlays ``configs/debug/tiny_*.yaml`` start EMA at once and sample grids
in a few steps) therefore have top-level sections of their own, :data:`NAMED_CALLBACKS` (``ema:``,
``sample_grid:``; null, the default, adds none): they merge like ``model:``, so ``ema: {init_args:
{update_starting_at_step: 0}}`` in a later config or ``--ema.init_args.update_starting_at_step=0`` changes that
value alone, and ``--print_config`` shows the merged sections.
"""

import sys
from pathlib import Path
from typing import Any, Optional

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from callbacks.ema import DelayedEMA
from callbacks.process_group import LeaveProcessGroupAtExit
from callbacks.sample_grid import SampleGridLogger
from experiments.checkpoint_checks import check_ckpt_path
from experiments.errors import parse_args
from experiments.predict import GuidanceOverride, SamplingOverride, check_refiner_options
from experiments.refining import load_chained_refiner
from experiments.resume import continue_in_run_directory, resolve_last_checkpoint
from experiments.run_directory import remove_if_failed_early

SHARED_CALLBACKS = Path(__file__).resolve().parents[1] / "configs" / "callbacks" / "training.yaml"
# (DataModule property, model init argument)
DATA_TO_MODEL: tuple[tuple[str, str], ...] = (
    ("num_classes", "num_classes"),  # SDM one-hot width, segmenter classes
    ("has_instances", "instance_edges"),  # SDM instance-edge channel
    ("pose_channels", "pose_channels"),  # PIDM pose channels
    ("pose_window", "pose_window"),  # PIDM poses per target (their channels concatenated)
)
# (top-level config section, callback class): callbacks configured outside trainer.callbacks (module docstring).
NAMED_CALLBACKS: tuple[tuple[str, type[Callback]], ...] = (("ema", DelayedEMA), ("sample_grid", SampleGridLogger))


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config in the run directory without ever overwriting one.

    Lightning's callback raises when ``config.yaml`` exists (a resumed run continues in its run directory,
    experiments/resume.py). Here the first run writes ``config.yaml`` and later runs into the same directory write
    ``config-1.yaml``, ``config-2.yaml``, ... with a message naming the file.
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
                rank_zero_info(f"{log_dir / f'{stem}{suffix}'} exists (this run continues a run in this directory); "
                               f"saving this run's config as {log_dir / name}")
        self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)


class CondiffCLI(LightningCLI):
    """LightningCLI with subclass-mode model and data, data-to-model links, named callback sections,
    non-clobbering config saving, one-line command-line errors and an early check of ``--ckpt_path``."""

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        # The entry points always pass the subcommand plus sys.argv[1:] explicitly; LightningCLI would warn about that.
        # A mistake is one line naming the option (experiments.errors), not jsonargparse's usage text.
        self.config = parse_args(parser, args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in DATA_TO_MODEL:
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")
        for section, callback_class in NAMED_CALLBACKS:
            parser.add_lightning_class_args(callback_class, section, subclass_mode=True, required=False)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "test":
            parser.add_argument("--refiner", type=Optional[str], default=None,
                                help="A refiner checkpoint (lightning_modules.refiner) that refines the PIDM model's "
                                     "test images; the test then scores refined and coarse images side by side")
            parser.add_class_arguments(SamplingOverride, "refiner_sampling")
            parser.add_class_arguments(GuidanceOverride, "refiner_guidance")
            parser.add_argument("--refiner_strength", type=Optional[float], default=None,
                                help="Where the refiner's sampling starts (1: noise; below 1: the noised coarse "
                                     "image); default: the refiner checkpoint's")
        return parser

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback | None]) -> Trainer:
        # LightningCLI hands over every named section's callback, also a null one (a segmenter has no EMA).
        callbacks = [callback for callback in callbacks if callback is not None]
        return super()._instantiate_trainer(config, [*callbacks, LeaveProcessGroupAtExit()])

    def _parse_ckpt_path(self) -> None:
        """Build the model from the config and command line alone, also when ``--ckpt_path`` is given.

        LightningCLI would parse the checkpoint's hyperparameters *over* them: a test-time override such as
        ``--model.init_args.guidance.scale 3`` would silently revert to the training value, and checkpoints whose
        hyperparameters jsonargparse cannot re-parse (dict-valued arguments) would fail to load. Weights still load
        strictly, so a config whose architecture differs from the checkpoint's fails naming the mismatched keys;
        every run saves the config it was trained with as ``config.yaml`` next to its checkpoints.
        """

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; a run that fails before writing anything worth keeping leaves no run directory behind."""
        with remove_if_failed_early(self.trainer):
            super()._run_subcommand(subcommand)

    def before_fit(self) -> None:
        # "last" must find the previous process's last.ckpt, which lives in an earlier logger version directory, and
        # the run continues in that directory (experiments.resume).
        config = self.config_init[self.subcommand]
        requested, config.ckpt_path = config.ckpt_path, resolve_last_checkpoint(self.trainer, config.ckpt_path)
        if requested == "last" and config.ckpt_path != "last":
            continue_in_run_directory(self.trainer, self.config[self.subcommand].trainer.logger, config.ckpt_path)
        check_ckpt_path(config.ckpt_path, self.model)

    def before_test(self) -> None:
        config = self.config_init[self.subcommand]
        check_ckpt_path(config.ckpt_path, self.model)
        check_refiner_options(config.refiner, config.refiner_sampling, config.refiner_guidance,
                              config.refiner_strength)
        if config.refiner is not None:
            self.model.attach_refiner(load_chained_refiner(config.refiner, self.model, config.refiner_sampling,
                                                           config.refiner_guidance, config.refiner_strength))


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
        parser_kwargs={"allow_abbrev": False, subcommand: {"default_config_files": [str(SHARED_CALLBACKS)]}},
        args=[subcommand, *argv],
        **kwargs,
    )
