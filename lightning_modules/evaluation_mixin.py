"""The evaluation part of the diffusion LightningModules' test loop (``python -m experiments.test``).

:class:`EvaluationMixin` is mixed into :class:`~lightning_modules.base.DiffusionLitModule`, which sets the
attributes it reads: ``evaluation`` (an :class:`EvaluationConfig` or None), ``test_sampling`` and
``test_num_samples`` (a ``SumMetric`` that ``test_step`` updates). A subclass implements
:meth:`EvaluationMixin.evaluate_test_batch` and, in its ``on_test_start``, calls
:meth:`EvaluationMixin.start_test_evaluation` with the images FID's real statistics describe. Results:
``test/<metric>`` logs, ``<log_dir>/test/metrics.json`` (rank zero), PNGs under ``<log_dir>/test/`` and
``hp/<metric>`` in the logger's hyperparameter view.
"""

from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.seed import isolate_rng
from tqdm.auto import tqdm

from datamodules.image_sets import ImageSetFingerprint
from lightning_modules.evaluation_io import TestOutputDir
from lightning_modules.hparams_logging import log_to_hparams_view
from lightning_modules.metrics import EvaluationConfig, EvaluationMetrics
from lightning_modules.metrics.temporal import video_flicker


def segmenter_hint(config: EvaluationConfig) -> str:
    """How to get the segmenter checkpoint that mIoU needs, or to skip mIoU."""
    dataset = config.fid.dataset if config.fid is not None else "<dataset>"
    return (f"Train one with `python -m experiments.fit --config configs/segmenter/{dataset}.yaml` and pass its "
            "checkpoint as --model.init_args.evaluation.miou.segmenter=<ckpt>, or skip mIoU with "
            """--model.init_args.evaluation='{"miou": null}'.""")


class EvaluationMixin:
    """Test hooks: build the metrics on the device, check the output folder is new, report at the epoch end.

    Under DDP every method here runs on every rank: each reaches collectives (broadcast, metric syncs).
    """

    @abstractmethod
    def evaluate_test_batch(self, batch: Mapping[str, Any], metrics: EvaluationMetrics, outputs: TestOutputDir) -> None:
        """Sample ``batch`` with ``test_sampling``, update ``metrics`` and save the batch's PNGs in ``outputs``.

        Checks first that the configured metrics fit the task (e.g. no mIoU for PIDM).
        """

    def on_test_start(self) -> None:
        """Reset the sample count; a subclass then calls :meth:`start_test_evaluation`."""
        self.test_num_samples.reset()

    def start_test_evaluation(
        self, fid_real_images: ImageSetFingerprint | None, extra_sets: Sequence[str] = ()
    ) -> None:
        """Check the output folder is new and build the metrics on the device (nothing without ``evaluation``).

        Args:
            fid_real_images: The images FID's real statistics describe, from the DataModule: they key the
                statistics cache, and their count is what complete statistics hold. None only without FID.
            extra_sets: Names of further image sets scored with the same protocol beside the generated images
                (e.g. ``coarse``: a refiner's inputs), in ``test_metric_sets``; reported as ``test/<set>/<metric>``
                and under ``<set>`` in ``metrics.json``.
        """
        object.__setattr__(self, "test_metric_sets", {})
        if self.evaluation is None:
            return
        outputs = TestOutputDir(Path(self.trainer.log_dir) / "test")
        conflict = self.trainer.strategy.broadcast(outputs.conflict() if self.trainer.is_global_zero else None)
        if conflict is not None:
            raise FileExistsError(conflict)
        # Plain attributes, not submodules: metric networks stay out of checkpoints, DDP and precision casts.
        object.__setattr__(self, "test_outputs", outputs)
        config = self._run_evaluation_config()
        segmenter = None
        if config.miou is not None:
            # segmentation_models_pytorch (with timm) takes 0.5 s to import; only an mIoU evaluation needs it.
            from lightning_modules.segmenter import load_segmenter

            segmenter = load_segmenter(config.miou.segmenter)
        real_images = None if fid_real_images is None else asdict(fid_real_images)
        metrics = EvaluationMetrics(config, self.device, real_images, segmenter)
        object.__setattr__(self, "test_metrics", metrics)
        for name in extra_sets:
            self.test_metric_sets[name] = EvaluationMetrics(config, self.device, real_images, segmenter)
        if metrics.fid_needs_real:
            rank_zero_info("FID: no cached real statistics for these images; computing them in this run (cached when "
                           "fid.stats_dir is set and every real image is seen)")

    def fid_datamodule(self, *methods: str) -> Any:
        """The trainer's DataModule, checked to have ``methods``, which describe or serve FID's real images."""
        datamodule = self.trainer.datamodule
        missing = [name for name in methods if not callable(getattr(datamodule, name, None))]
        if missing:
            raise TypeError(f"evaluation.fid needs the test DataModule to provide {', '.join(missing)} for its real "
                            f"images; {type(datamodule).__name__} does not. Use a condiff DataModule, or set "
                            "evaluation.fid to null")
        return datamodule

    def compute_fid_reference(self, loader: Iterable[Mapping[str, Any]], description: str) -> None:
        """Feed every real image of ``loader`` to FID, then finish (and cache) the statistics.

        The pass leaves the global random state as it found it (loaders draw from it), so samplers that use it give
        the same images whether or not the statistics were cached.

        Args:
            loader: Batches with ``image`` in [-1, 1], sharded over the ranks with every image seen once.
            description: What the images are, for the progress bar (e.g. ``"train images"``).
        """
        show = self.trainer.is_global_zero and self.trainer.progress_bar_callback is not None
        with isolate_rng():
            for batch in tqdm(loader, desc=f"FID real statistics ({description})", disable=not show):
                self.test_metrics.update_fid_real(batch["image"].to(self.device))
        self.test_metrics.finish_real_stats()
        for metrics in self.test_metric_sets.values():
            metrics.adopt_real_stats(self.test_metrics)

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
        counts = self.test_metrics.counts()  # every rank
        for name, value in scores.items():
            self.log(f"test/{name}", value, sync_dist=True)
        extra = {}
        for set_name, metrics in self.test_metric_sets.items():
            extra[set_name] = {"metrics": {name: float(value) for name, value in metrics.compute().items()},
                               "counts": metrics.counts()}
            for name, value in extra[set_name]["metrics"].items():
                self.log(f"test/{set_name}/{name}", value, sync_dist=True)
        params = {"checkpoint": str(self.trainer.ckpt_path), "test_sampling": asdict(self.test_sampling),
                  "num_samples": num_samples, **self.test_run_description()}
        if self.trainer.is_global_zero:
            self._warn_if_fid_partial(counts)
            temporal = self.test_metrics.config.temporal
            if temporal is not None:  # every process has written its frames: compute() above was collective
                scores.update(video_flicker(self.test_outputs.root / "generated", self.test_outputs.root / "real",
                                            temporal.min_frames))
            path = self.test_outputs.write_metrics({
                **params,
                "metrics": scores,
                "counts": counts,
                "protocol": self.test_metrics.description,
                "evaluation": asdict(self.test_metrics.config),
                "model": type(self).__name__,
                **extra,
            })
            shown = "".join(f"; {set_name}: {values['metrics']}" for set_name, values in extra.items())
            rank_zero_info(f"Test metrics of {num_samples} samples: {scores}{shown}; written to {path}")
        hp_values = {f"hp/{name}": value for name, value in scores.items()}
        hp_values.update({f"hp/{set_name}/{name}": value for set_name, values in extra.items()
                          for name, value in values["metrics"].items()})
        for logger in self.loggers:
            log_to_hparams_view(logger, params, hp_values)
        self.test_metrics.reset()
        for metrics in self.test_metric_sets.values():
            metrics.reset()

    def test_run_description(self) -> dict[str, Any]:
        """Further settings of this test run for ``metrics.json`` and the hyperparameter view (e.g. a chained
        refiner's checkpoint and sampler)."""
        return {}

    def _warn_if_fid_partial(self, counts: Mapping[str, int]) -> None:
        """Warn when FID saw fewer generated images than the full test split holds (the protocol's count)."""
        dataset = getattr(self.trainer.test_dataloaders, "dataset", None)
        if "fid_generated" not in counts or not isinstance(dataset, Sized):
            return
        if counts["fid_generated"] < len(dataset):
            rank_zero_warn(f"FID computed from {counts['fid_generated']} generated images, but the full test split "
                           f"has {len(dataset)} (e.g. --trainer.limit_test_batches): not comparable with the "
                           "protocol's full-split FID")
