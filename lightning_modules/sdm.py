"""SDM: semantic-layout-to-image diffusion (Wang et al. 2022) as a LightningModule."""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_warn
from torch import Tensor

from datamodules.palettes import bit_interleaved_palette
from lightning_modules.base import TEST_OPTIONS, DiffusionLitModule, SamplingOptions, StepCallback
from lightning_modules.conditioning import drop_conditions, instance_edges, semantic_condition
from lightning_modules.diffusion import classifier_free
from lightning_modules.evaluation_io import TestOutputDir, named_noise, sample_name
from lightning_modules.evaluation_mixin import segmenter_hint
from lightning_modules.metrics import EvaluationMetrics
from lightning_modules.nets.sdm_unet import SDMUNet

LABEL_LUT_KEY = "raw_label_lut"  # checkpoint entry: class id of every raw label value (int16, -1: no class)


class SDMLitModule(DiffusionLitModule):
    """SDM network trained with the hybrid loss; the one-hot (+ instance-edge) condition is built on the device.

    ``num_classes`` and ``instance_edges`` normally come from the DataModule through the CLI links
    (``experiments/cli.py``), so the class count is set once, in the data config.

    Args:
        num_classes: One-hot channels of the condition (dataset classes including dontcare).
        instance_edges: Append the instance-edge channel (batches must then carry ``instance`` maps).
        image_size: Nominal training resolution (places attention; see ``SDMUNet``).
        image_channels: Image channels.
        model_channels: UNet base width.
        channel_mult: Width multiplier per resolution level.
        num_res_blocks: Residual blocks per encoder level.
        attention_resolutions: Feature resolutions with self-attention.
        num_heads: Attention heads (when ``num_head_channels`` is -1).
        num_head_channels: Channels per attention head (-1: use ``num_heads``).
        num_heads_upsample: Decoder attention heads (-1: same as ``num_heads``).
        dropout: Dropout inside residual blocks.
        resblock_updown: Resample inside residual blocks (official SDM).
        spade_hidden_channels: Hidden width of the SPADE modulation networks.
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        norm_channels_per_group: Channels per GroupNorm group (None: the official ``min(32, C)`` groups; 4
            suits 32-channel networks, whose official grouping hides per-image mean colours).
        condition_drop_prob: Probability of zeroing a training sample's whole condition (classifier-free guidance
            training); usually set from a step on by ``callbacks.cfg_finetune.CFGFineTune``.
        **kwargs: Diffusion, optimizer, sampling and initialisation options of
            :class:`~lightning_modules.base.DiffusionLitModule`.
    """

    def __init__(
        self,
        num_classes: int,
        instance_edges: bool = False,
        image_size: int = 256,
        image_channels: int = 3,
        model_channels: int = 256,
        channel_mult: Sequence[float] = (1, 1, 2, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (32, 16, 8),
        num_heads: int = 4,
        num_head_channels: int = 64,
        num_heads_upsample: int = -1,
        dropout: float = 0.0,
        resblock_updown: bool = True,
        spade_hidden_channels: int = 128,
        gradient_checkpointing: bool = False,
        norm_channels_per_group: int | None = None,
        condition_drop_prob: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if num_classes is None or num_classes < 1:
            raise ValueError(
                f"SDMLitModule needs num_classes >= 1, got {num_classes}; it is linked from the DataModule's "
                "num_classes, so the data class must expose it (or set model.init_args.num_classes)"
            )
        variance = kwargs.get("variance", "learned_range")
        net = SDMUNet(
            label_channels=num_classes + int(bool(instance_edges)),
            image_channels=image_channels,
            model_channels=model_channels,
            channel_mult=tuple(channel_mult),
            num_res_blocks=num_res_blocks,
            attention_resolutions=tuple(attention_resolutions),
            image_size=image_size,
            num_heads=num_heads,
            num_head_channels=num_head_channels,
            num_heads_upsample=num_heads_upsample,
            dropout=dropout,
            learn_sigma=variance == "learned_range",
            resblock_updown=resblock_updown,
            spade_hidden_channels=spade_hidden_channels,
            gradient_checkpointing=gradient_checkpointing,
            norm_channels_per_group=norm_channels_per_group,
        )
        super().__init__(net, **kwargs)
        self.save_hyperparameters(ignore=list(TEST_OPTIONS))
        self.num_classes = num_classes
        self.instance_edges = bool(instance_edges)
        self.image_channels = image_channels
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
        sampler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        x_T: Tensor | None = None,
    ) -> Tensor:
        """Generate images (B, C, H, W) in [-1, 1] for class-id maps (B, H, W); unset options use the defaults.

        ``x_T`` is the initial noise (default: drawn from ``generator``).

        Guidance ε_null + s·(ε_cond − ε_null) is active for ``guidance_scale > 1``; the null condition is the
        all-zero tensor (official SDM) and both variants run in one batched network call per step.
        """
        defaults = self.sampling
        options = SamplingOptions(
            sampler=defaults.sampler if sampler is None else sampler,
            steps=defaults.steps if steps is None else steps,
            guidance_scale=defaults.guidance_scale if guidance_scale is None else guidance_scale,
            eta=defaults.eta if eta is None else eta,
        )
        y = self.condition(label.to(self.device), None if instance is None else instance.to(self.device))
        variants = {"cond": {"y": y}, "null": {"y": torch.zeros_like(y)}}
        shape = (y.shape[0], self.image_channels, *y.shape[2:])
        return self.sample(
            variants,
            classifier_free(options.guidance_scale),
            shape,
            options=options,
            generator=generator,
            callback=callback,
            x_T=x_T,
        ).clamp(-1, 1)

    def generate_batch(
        self,
        batch: Mapping[str, Any],
        *,
        options: SamplingOptions,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
    ) -> Tensor:
        return self.generate(
            batch["label"],
            batch.get("instance"),
            sampler=options.sampler,
            steps=options.steps,
            guidance_scale=options.guidance_scale,
            eta=options.eta,
            generator=generator,
            callback=callback,
        )

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
        options = self.test_sampling
        names = [sample_name(path) for path in batch["path"]]
        label, instance = batch["label"], batch.get("instance")
        diversity = metrics.lpips is not None and metrics.config.lpips.mode == "diversity"
        if metrics.ssim is not None or metrics.appearance is not None or (metrics.lpips is not None and not diversity):
            raise ValueError("SDM evaluation takes evaluation.fid, evaluation.lpips with mode: diversity and "
                             "evaluation.miou; set evaluation.ssim and evaluation.appearance to null and lpips.mode "
                             "to diversity")
        count = metrics.config.lpips.num_samples if diversity else 1
        shape = (self.image_channels, *label.shape[-2:])
        samples = torch.stack([
            self.generate(label, instance, sampler=options.sampler, steps=options.steps,
                          guidance_scale=options.guidance_scale, eta=options.eta,
                          x_T=named_noise(names, shape, options.seed, index, self.device))
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

    def image_log_columns(self, batch: Mapping[str, Any], generated: Tensor) -> list[Tensor]:
        """Colourised label | instance edges (when used) | generated | real image (when the batch has one)."""
        label = batch["label"].to(generated.device)
        palette = self._palette().to(generated.device)
        columns = [palette[label].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)]
        if self.instance_edges:
            columns.append(instance_edges(batch["instance"].to(generated.device)).expand(-1, 3, -1, -1) * 2 - 1)
        columns.append(generated)
        if "image" in batch:
            columns.append(batch["image"].to(generated.device))
        return columns

    def _palette(self) -> Tensor:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        palette = getattr(datamodule, "palette", None)
        if palette is None:
            palette = bit_interleaved_palette(self.num_classes)
        if palette.shape[0] < self.num_classes:
            raise ValueError(f"palette has {palette.shape[0]} colours for {self.num_classes} classes")
        return palette
