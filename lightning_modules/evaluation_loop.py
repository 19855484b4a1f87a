"""The evaluation part of the diffusion LightningModules' test loop (``python -m experiments.test``).

:class:`EvaluationTestLoop` is mixed into :class:`~lightning_modules.base.DiffusionLitModule`, which sets the
attributes it reads: ``evaluation`` (an :class:`EvaluationConfig` or None), ``test_sampling`` and
``test_num_samples`` (a ``SumMetric`` that ``test_step`` updates). A subclass implements
:meth:`EvaluationTestLoop.evaluate_test_batch`. Results: ``test/<metric>`` logs, ``<log_dir>/test/metrics.json``
(rank zero), PNGs under ``<log_dir>/test/`` and ``hp/<metric>`` in the logger's hyperparameter view.
"""

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from lightning_modules.evaluation_io import TestOutputDir
from lightning_modules.metrics import EvaluationConfig, EvaluationMetrics


def log_to_hparams_view(logger: Logger, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """Log a run's settings with its scores; TensorBoard shows them together in its HParams view."""
    if isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(dict(params), dict(metrics))
    else:
        logger.log_hyperparams(dict(params))
        logger.log_metrics(dict(metrics))


def segmenter_hint(config: EvaluationConfig) -> str:
    """How to get the segmenter checkpoint that mIoU needs, or to skip mIoU."""
    dataset = config.fid.dataset if config.fid is not None else "<dataset>"
    return (f"Train one with `python -m experiments.fit --config configs/segmenter/{dataset}.yaml` and pass its "
            "checkpoint as --model.init_args.evaluation.miou.segmenter=<ckpt>, or skip mIoU with "
            """--model.init_args.evaluation='{"miou": null}'.""")


class EvaluationTestLoop:
    """Test hooks: build the metrics on the device, check the output folder is new, report at the epoch end."""

    @abstractmethod
    def evaluate_test_batch(self, batch: Mapping[str, Any], metrics: EvaluationMetrics, outputs: TestOutputDir) -> None:
        """Sample ``batch`` with ``test_sampling``, update ``metrics`` and save the batch's PNGs in ``outputs``.

        Checks first that the configured metrics fit the task (e.g. no mIoU for PIDM).
        """

    def on_test_start(self) -> None:
        self.test_num_samples.reset()
        if self.evaluation is None:
            return
        outputs = TestOutputDir(Path(self.trainer.log_dir) / "test")
        conflict = self.trainer.strategy.broadcast(outputs.conflict() if self.trainer.is_global_zero else None)
        if conflict is not None:
            raise FileExistsError(conflict)
        # Plain attributes, not submodules: metric networks stay out of checkpoints, DDP and precision casts.
        object.__setattr__(self, "test_outputs", outputs)
        object.__setattr__(self, "test_metrics", EvaluationMetrics(self._run_evaluation_config(), self.device))
        if self.test_metrics.fid_needs_real:
            rank_zero_info("FID: no cached real statistics for this protocol; computing them from the real test "
                           "images as they stream through (and caching them when fid.stats_dir is set)")

    def _run_evaluation_config(self) -> EvaluationConfig:
        """The evaluation config, checked for what would only fail after sampling (a missing segmenter file)."""
        config = self.evaluation
        if config.miou is not None and not Path(config.miou.segmenter).is_file():
            raise FileNotFoundError(f"evaluation.miou.segmenter: no segmenter checkpoint at {config.miou.segmenter}. "
                                    f"{segmenter_hint(config)}")
        return config

    def on_test_epoch_end(self) -> None:
        num_samples = int(self.test_num_samples.compute())  # synced: every sample exactly once (evaluation_sampler)
        self.log("test/num_samples", float(num_samples), sync_dist=True)
        if self.evaluation is None:
            return
        scores = {name: float(value) for name, value in self.test_metrics.compute().items()}  # every rank
        for name, value in scores.items():
            self.log(f"test/{name}", value, sync_dist=True)
        params = {"checkpoint": str(self.trainer.ckpt_path), "test_sampling": asdict(self.test_sampling),
                  "num_samples": num_samples}
        if self.trainer.is_global_zero:
            path = self.test_outputs.write_metrics({
                **params,
                "metrics": scores,
                "protocol": self.test_metrics.description,
                "evaluation": asdict(self.test_metrics.config),
                "model": type(self).__name__,
            })
            rank_zero_info(f"Test metrics of {num_samples} samples: {scores}; written to {path}")
        for logger in self.loggers:
            log_to_hparams_view(logger, params, {f"hp/{name}": value for name, value in scores.items()})
        self.test_metrics.reset()
