"""SDM: semantic-layout-to-image diffusion (Wang et al. 2022) as a LightningModule."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn

from lightning_modules.base import TEST_OPTIONS, DiffusionLitModule, SamplerSettings, settings
from lightning_modules.conditioning import condition_channels, drop_conditions, instance_edges, semantic_condition
from lightning_modules.diffusion import Guidance, StepCallback, classifier_free
from lightning_modules.evaluation_io import TestOutputDir, named_noise, sample_name
from lightning_modules.evaluation_mixin import segmenter_hint
from lightning_modules.metrics import EvaluationMetrics
from lightning_modules.nets.sdm_unet import SDMUNet, SDMUNetConfig

LABEL_LUT_KEY = "raw_label_lut"  # checkpoint entry: class id of every raw label value (int16, -1: no class)


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """SDM's guidance ε̂_null + s·(ε̂_cond − ε̂_null) on ε, with the all-zero null condition of the official code.

    Args:
        scale: s; guidance is active for s > 1 only (the official scripts sample with 1.5 after the classifier-free
            fine-tune).
    """

    scale: float = 1.0

    def rule(self) -> Guidance:
        """The combination of the ``cond`` and ``null`` variants' outputs."""
        return classifier_free(self.scale)


class SDMLitModule(DiffusionLitModule):
    """SDM network trained with the hybrid loss; the one-hot (+ instance-edge) condition is built on the device.

    ``num_classes`` and ``instance_edges`` normally come from the DataModule through the CLI links
    (``experiments/cli.py``), so the class count is set once, in the data config.

    Args:
        num_classes: One-hot channels of the condition (dataset classes including dontcare).
        instance_edges: Append the instance-edge channel (batches must then carry ``instance`` maps).
        network: The UNet's architecture.
        guidance: Classifier-free guidance of grids, ``predict`` and the test command.
        condition_drop_prob: Probability of zeroing a training sample's whole condition (classifier-free guidance
            training); usually set from a step on by ``callbacks.cfg_finetune.CFGFineTune``.
        **kwargs: Diffusion, optimizer, sampling and initialisation options of
            :class:`~lightning_modules.base.DiffusionLitModule`.
    """

    def __init__(
        self,
        num_classes: int,
        instance_edges: bool = False,
        network: SDMUNetConfig = SDMUNetConfig(),
        guidance: ClassifierFreeGuidance = ClassifierFreeGuidance(),
        condition_drop_prob: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if num_classes is None or num_classes < 1:
            raise ValueError(
                f"SDMLitModule needs num_classes >= 1, got {num_classes}; it is linked from the DataModule's "
                "num_classes, so the data class must expose it (or set model.init_args.num_classes)"
            )
        network = settings(SDMUNetConfig, network)
        label_channels = condition_channels(num_classes, bool(instance_edges))
        super().__init__(lambda learn_sigma: SDMUNet(label_channels, network, learn_sigma), **kwargs)
        self.save_hyperparameters(ignore=list(TEST_OPTIONS))
        self.guidance = settings(ClassifierFreeGuidance, guidance)
        self.num_classes = num_classes
        self.instance_edges = bool(instance_edges)
        self.image_channels = network.image_channels
        self.condition_drop_prob = condition_drop_prob
        # Raw label-file value -> class id of the training data; saved in checkpoints for experiments.predict.
        self.raw_label_lut: Tensor | None = None

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if hasattr(self.trainer.datamodule, "raw_label_lut"):
            self.raw_label_lut = self.trainer.datamodule.raw_label_lut()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.raw_label_lut is not None:
            checkpoint[LABEL_LUT_KEY] = self.raw_label_lut

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if LABEL_LUT_KEY in checkpoint:
            self.raw_label_lut = checkpoint[LABEL_LUT_KEY]

    def condition(self, label: Tensor, instance: Tensor | None = None) -> Tensor:
        """The condition ``y`` (B, num_classes [+1], H, W) from class ids (B, H, W) and optional instance maps."""
        if self.instance_edges and instance is None:
            raise ValueError("this SDM model uses instance edges, so batches need an 'instance' map")
        return semantic_condition(label, self.num_classes, instance if self.instance_edges else None)

    def _batch_condition(self, batch: Mapping[str, Any]) -> Tensor:
        return self.condition(batch["label"], batch.get("instance"))

    def training_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        y = self._batch_condition(batch)
        if self.training:
            y = drop_conditions(y, self.condition_drop_prob)
        return batch["image"], {"y": y}

    @torch.no_grad()
    def generate(
        self,
        label: Tensor,
        instance: Tensor | None = None,
        *,
        sampling: SamplerSettings | None = None,
        guidance: ClassifierFreeGuidance | None = None,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        x_T: Tensor | None = None,
    ) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] for class-id maps (B, H, W) (see :meth:`generate_batch`)."""
        batch = {"label": label} if instance is None else {"label": label, "instance": instance}
        return self.generate_batch(batch, sampling=sampling, guidance=guidance, generator=generator,
                                   callback=callback, x_T=x_T)

    def guided_conditions(
        self, batch: Mapping[str, Any], guidance: ClassifierFreeGuidance | None = None, net: nn.Module | None = None
    ) -> tuple[dict[str, dict[str, Any]], Guidance, tuple[int, ...]]:
        """The condition ``y`` of the batch's label (and instance) maps and its all-zero null variant."""
        y = self.condition(batch["label"], batch.get("instance"))
        variants = {"cond": {"y": y}, "null": {"y": torch.zeros_like(y)}}
        rule = (self.guidance if guidance is None else guidance).rule()
        return variants, rule, (y.shape[0], self.image_channels, *y.shape[2:])

    def on_test_start(self) -> None:
        """Build the metrics; FID's real statistics are the test images', streamed with the batches unless cached."""
        super().on_test_start()
        fid = None if self.evaluation is None else self.evaluation.fid
        real_images = None if fid is None else self.fid_datamodule("image_fingerprint").image_fingerprint("test")
        self.start_test_evaluation(real_images)
        if self.evaluation is not None and self.evaluation.miou is None:
            rank_zero_warn(f"mIoU skipped: evaluation.miou is not set. {segmenter_hint(self.evaluation)}")

    def evaluate_test_batch(self, batch: Mapping[str, Any], metrics: EvaluationMetrics, outputs: TestOutputDir) -> None:
        """FID, LPIPS diversity and mIoU of the batch; PNGs ``generated/``, ``real/`` and ``label/`` (class ids).

        With LPIPS diversity, ``lpips.num_samples`` images are sampled per label map (saved as ``<name>_s<k>.png``);
        FID and mIoU score the first of them, so they do not depend on the number of diversity samples.
        """
        sampling = self.test_sampling
        names = [sample_name(path) for path in batch["path"]]
        label = batch["label"]
        diversity = metrics.lpips is not None and metrics.config.lpips.mode == "diversity"
        if metrics.ssim is not None or metrics.appearance is not None or (metrics.lpips is not None and not diversity):
            raise ValueError("SDM evaluation takes evaluation.fid, evaluation.lpips with mode: diversity and "
                             "evaluation.miou; set evaluation.ssim and evaluation.appearance to null and lpips.mode "
                             "to diversity")
        count = metrics.config.lpips.num_samples if diversity else 1
        shape = (self.image_channels, *label.shape[-2:])
        samples = torch.stack([
            self.generate_batch(batch, sampling=sampling, x_T=named_noise(names, shape, sampling.seed, index,
                                                                          self.device))
            for index in range(count)
        ])  # fmt: skip
        if metrics.fid is not None:
            metrics.update_fid(samples[0], real=batch["image"])
        if diversity:
            metrics.update_lpips_diversity(samples)
        if metrics.miou is not None:
            metrics.update_miou(samples[0], label.to(self.device))
        for index, images in enumerate(samples):
            outputs.save_images("generated", [f"{name}_s{index}" for name in names] if diversity else names, images)
        outputs.save_images("real", names, batch["image"])
        outputs.save_label_maps("label", names, label)

    def image_log_columns(
        self, batch: Mapping[str, Any], generated: Tensor, palette: Tensor | None = None
    ) -> list[Tensor]:
        """Label map (in ``palette``'s colours, else grey levels) | instance edges (when used) | generated | real
        image (when the batch has one)."""
        label = batch["label"].to(generated.device)
        if palette is None:
            picture = (label.float() / max(self.num_classes - 1, 1)).unsqueeze(1).expand(-1, 3, -1, -1) * 2 - 1
        elif palette.shape[0] < self.num_classes:
            raise ValueError(f"palette has {palette.shape[0]} colours for {self.num_classes} classes")
        else:
            picture = palette.to(generated.device)[label].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        columns = [picture]
        if self.instance_edges:
            columns.append(instance_edges(batch["instance"].to(generated.device)).expand(-1, 3, -1, -1) * 2 - 1)
        columns.append(generated)
        if "image" in batch:
            columns.append(batch["image"].to(generated.device))
        return columns
