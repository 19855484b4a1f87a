"""``EvaluationMetrics``: the metrics of one evaluation run, for a LightningModule's test/validation loop.

It is a plain object, not an ``nn.Module``: assigned with ``object.__setattr__`` (or kept in a non-module
container) it stays out of the module tree, so Inception/LPIPS/segmenter weights never reach checkpoints, DDP
wrapping or "-true" precision casts. Typical use::

    def on_test_start(self):
        real_images = asdict(self.trainer.datamodule.image_fingerprint("test"))  # what real statistics describe
        metrics = EvaluationMetrics.from_config(self.evaluation, self.device, real_images, segmenter=None)
        object.__setattr__(self, "metrics", metrics)

    def test_step(self, batch, batch_idx):
        fake = self.sample(batch)                          # [-1, 1]
        self.metrics.update_fid(fake, real=batch["image"])  # real ignored once real statistics are known
        self.metrics.update_miou(fake, batch["label"])

    def on_test_epoch_end(self):
        self.log_dict(self.metrics.compute())               # collective: every rank calls it
        self.metrics.reset()

All ``update_*`` methods take images in [-1, 1], round them to uint8 like PNG files, and run with autocast off.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassJaccardIndex

from lightning_modules.metrics.appearance import AppearanceTransfer
from lightning_modules.metrics.config import EvaluationConfig, LPIPSConfig
from lightning_modules.metrics.distributed import (
    process_rank,
    rank_zero_choice,
    sum_over_ranks,
)
from lightning_modules.metrics.fid import build_fid
from lightning_modules.metrics.fid_stats import (
    load_real_stats,
    real_stats_key,
    real_stats_path,
    save_real_stats,
)
from lightning_modules.metrics.image_conversion import (
    resize_uint8,
    to_uint8,
    uint8_to_signed,
    uint8_to_unit,
)
from lightning_modules.metrics.lpips import (
    LPIPS_MIN_SIZE,
    build_lpips,
    lpips_diversity,
    stargan_v2_inputs,
)
from lightning_modules.metrics.ssim import cropped_ssim


class EvaluationMetrics:
    """FID, LPIPS, SSIM, mIoU and appearance transfer with their networks, built from an :class:`EvaluationConfig`.

    Args:
        config: Which metrics, which protocol, where the weights are.
        device: Where metric states and networks live (the LightningModule's device).
        real_images: What identifies the images FID's real statistics describe (the DataModule's fingerprint as
            a mapping, with at least ``root`` and ``count``): part of the cache key, and ``count`` is how many real
            images make the statistics complete. Required with ``fid.stats_dir``.
        segmenter: The frozen segmentation network mIoU is measured with (required with ``miou``, e.g.
            ``lightning_modules.segmenter.load_segmenter(config.miou.segmenter)``); it takes images in [-1, 1] and
            has ``hparams.num_classes`` and ``hparams.ignore_index``.
    """

    def __init__(self, config: EvaluationConfig, device: torch.device | str = "cpu",
                 real_images: Mapping[str, Any] | None = None, segmenter: nn.Module | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self.real_images = real_images
        self.description: dict[str, object] = {}
        self.fid = self.lpips_model = self.lpips = self.ssim = self.segmenter = self.miou = self.appearance = None
        self._warned_lpips_size = self._warned_ssim_window = False
        self._real_stats_ready = False
        if config.fid is not None:
            self._build_fid()
        if config.lpips is not None:
            self.lpips_model = build_lpips(config.lpips.net, config.weights_dir, config.offline).to(self.device)
            self.lpips = MeanMetric().to(self.device)
            self.description["lpips"] = {"mode": config.lpips.mode, "net": config.lpips.net}
        if config.ssim is not None:
            self.ssim = MeanMetric().to(self.device)
            self.description["ssim"] = {"window": config.ssim.window, "resolution": config.ssim.resolution}
        if (config.miou is None) != (segmenter is None):
            raise ValueError("evaluation.miou needs the segmenter network (and only mIoU takes one): "
                             f"miou is {config.miou}, segmenter is {type(segmenter).__name__}")
        if config.miou is not None:
            self.segmenter = segmenter.to(self.device)
            hparams = self.segmenter.hparams
            self.miou = MulticlassJaccardIndex(hparams.num_classes, ignore_index=hparams.ignore_index,
                                               average="macro", validate_args=False).to(self.device)
            self.description["miou"] = {"segmenter": config.miou.segmenter, "num_classes": hparams.num_classes}
        if config.appearance is not None:
            appearance = config.appearance
            self.appearance = AppearanceTransfer(appearance.num_parts, appearance.min_pixels).to(self.device)
            self.description["appearance"] = asdict(config.appearance)

    @classmethod
    def from_config(cls, config: EvaluationConfig | Mapping, device: torch.device | str = "cpu",
                    real_images: Mapping[str, Any] | None = None,
                    segmenter: nn.Module | None = None) -> EvaluationMetrics:
        """Build from a config dataclass or a plain mapping (YAML block)."""
        if isinstance(config, Mapping):
            config = EvaluationConfig.from_dict(dict(config))
        return cls(config, device, real_images, segmenter)

    def _build_fid(self) -> None:
        cfg = self.config.fid
        if cfg.stats_dir is not None and self.real_images is None:
            raise ValueError(f"evaluation.fid.stats_dir={cfg.stats_dir!r} caches real statistics per image set, but "
                             "no real_images fingerprint was given to identify them; pass the DataModule's, or set "
                             "stats_dir to null")
        fid, extractor = build_fid(cfg.extractor, cfg.antialias, self.config.weights_dir, self.config.offline,
                                     cfg.features)
        self.fid = fid.to(self.device)
        images = None if self.real_images is None else dict(self.real_images)
        self._real_stats_key = real_stats_key(cfg.dataset, cfg.split, cfg.resolution, cfg.resize, extractor, images)
        self._real_stats_path = None if cfg.stats_dir is None else real_stats_path(cfg.stats_dir,
                                                                                  self._real_stats_key)
        if self._real_stats_path is not None:
            loaded = load_real_stats(self.fid, self._real_stats_path, self._real_stats_key)
            self._real_stats_ready = rank_zero_choice(loaded)  # the other ranks' real states stay zero either way
        self.description["fid"] = {**self._real_stats_key, "real_stats_cached": self._real_stats_ready}

    @property
    def fid_needs_real(self) -> bool:
        """Whether real images must still be fed (no cached statistics and none computed yet)."""
        return self.fid is not None and not self._real_stats_ready

    def update_fid(self, fake: Tensor, real: Tensor | None = None) -> None:
        """Add generated images, and real ones while their statistics are not known yet.

        Args:
            fake: ``(N, 3, H, W)`` generated images in [-1, 1].
            real: Real images in [-1, 1] streaming alongside (SDM: the test images); ignored once the real
                statistics are known.
        """
        cfg = self.config.fid
        with torch.autocast(self.device.type, enabled=False):
            self.fid.update(resize_uint8(to_uint8(fake), cfg.resolution, cfg.resize), real=False)
        if real is not None and self.fid_needs_real:
            self.update_fid_real(real)

    @torch.no_grad()
    def update_fid_real(self, real: Tensor) -> None:
        """Add ``(N, 3, H, W)`` real images in [-1, 1] to statistics still being computed (see ``fid_needs_real``)."""
        if not self.fid_needs_real:
            raise RuntimeError("FID real statistics are already complete (cached or finished); real images can only "
                               "be added while fid_needs_real is true")
        cfg = self.config.fid
        with torch.autocast(self.device.type, enabled=False):
            self.fid.update(resize_uint8(to_uint8(real), cfg.resolution, cfg.resize), real=True)

    def finish_real_stats(self) -> None:
        """Declare the real statistics complete; cache them if they cover the whole image set.

        A collective under DDP: every rank must call it. Statistics from more or fewer images than ``real_images``
        counts (a partial run such as ``--trainer.limit_test_batches``) are used for this run only, with a warning,
        and never cached.
        """
        if not self.fid_needs_real:
            return
        fed = round(sum_over_ranks(self.fid.real_features_num_samples))
        expected = None if self.real_images is None else self.real_images["count"]
        if expected is not None and fed != expected:
            if process_rank() == 0:
                warnings.warn(f"FID real statistics come from {fed} images, but the real image set under "
                              f"{self.real_images['root']} has {expected} (a partial run, e.g. limit_test_batches); "
                              "they are used for this run only and not cached.", stacklevel=2)
        elif self._real_stats_path is not None:
            save_real_stats(self.fid, self._real_stats_path, self._real_stats_key)
        self._real_stats_ready = True

    def adopt_real_stats(self, other: EvaluationMetrics) -> None:
        """Take ``other``'s finished FID real statistics (same protocol), e.g. to score a second image set of the same
        run against them without feeding the real images twice."""
        if self.fid is None:
            return
        if other.fid is None or other.fid_needs_real or other._real_stats_key != self._real_stats_key:
            raise ValueError("adopt_real_stats needs finished real statistics of the same FID protocol")
        for name in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples"):
            setattr(self.fid, name, getattr(other.fid, name).clone())
        self._real_stats_ready = True

    def update_lpips(self, fake: Tensor, target: Tensor) -> None:
        """Reconstruction LPIPS of generated images against their ground truth (both in [-1, 1])."""
        self._check_lpips_mode("reconstruction")
        size = self.config.lpips.resolution
        with torch.autocast(self.device.type, enabled=False):
            fake, target = (uint8_to_signed(resize_uint8(to_uint8(x), size)) for x in (fake, target))
            fake, target = self._lpips_sized(fake), self._lpips_sized(target)
            self.lpips.update(self.lpips_model(fake, target).flatten())

    def update_lpips_diversity(self, samples: Tensor) -> None:
        """Diversity LPIPS of ``(K, B, 3, H, W)`` samples (K per condition, in [-1, 1])."""
        cfg = self._check_lpips_mode("diversity")
        if samples.shape[0] != cfg.num_samples:
            raise ValueError(f"LPIPS diversity expects lpips.num_samples={cfg.num_samples} samples per condition, "
                             f"got {samples.shape[0]} (samples shaped (K, B, 3, H, W))")
        with torch.autocast(self.device.type, enabled=False):
            images = uint8_to_signed(resize_uint8(to_uint8(samples.flatten(0, 1)), cfg.resolution))
            images = self._lpips_sized(images)
            if cfg.stargan_v2_preprocess:
                images = stargan_v2_inputs(images)
            self.lpips.update(lpips_diversity(self.lpips_model, images.unflatten(0, samples.shape[:2])))

    def _lpips_sized(self, images: Tensor) -> Tensor:
        """``images`` upsampled (bilinear) to the LPIPS backbone's smallest input when a side is below it, with a
        warning: at smoke-test sizes (16 px) the backbone would otherwise fail inside a pooling layer."""
        minimum = LPIPS_MIN_SIZE[self.config.lpips.net]
        height, width = images.shape[-2:]
        if min(height, width) >= minimum:
            return images
        scale = minimum / min(height, width)
        size = (math.ceil(height * scale), math.ceil(width * scale))
        if not self._warned_lpips_size:
            warnings.warn(f"LPIPS ({self.config.lpips.net}) needs images of at least {minimum} px per side; "
                          f"{height}x{width} images are scored at {size[0]}x{size[1]} (bilinear). Set "
                          "evaluation.lpips.resolution to choose the size.", stacklevel=3)
            self._warned_lpips_size = True
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)

    def _check_lpips_mode(self, mode: str) -> LPIPSConfig:
        if self.config.lpips.mode != mode:
            raise ValueError(f"LPIPS is configured for {self.config.lpips.mode!r} (evaluation.lpips.mode), "
                             f"but a {mode!r} update was made")
        return self.config.lpips

    def update_ssim(self, fake: Tensor, target: Tensor) -> None:
        """SSIM of generated images against their ground truth (both in [-1, 1]), per image, in float64."""
        cfg = self.config.ssim
        fake, target = (uint8_to_unit(resize_uint8(to_uint8(x), cfg.resolution), torch.float64)
                        for x in (fake, target))
        window, side = cfg.window, min(fake.shape[-2:])
        if window > side:  # smoke-test sizes: the largest odd window that fits
            window = side if side % 2 else side - 1
            if not self._warned_ssim_window:
                warnings.warn(f"SSIM window {cfg.window} does not fit {fake.shape[-2]}x{fake.shape[-1]} images; "
                              f"scored with window {window}. Set evaluation.ssim.resolution or window to choose.",
                              stacklevel=2)
                self._warned_ssim_window = True
        with torch.autocast(self.device.type, enabled=False):
            self.ssim.update(cropped_ssim(fake, target, window))

    @torch.no_grad()
    def update_miou(self, fake: Tensor, label: Tensor) -> None:
        """Segment generated images (in [-1, 1]) and compare with the input label maps ``(N, H, W)`` int64."""
        with torch.autocast(self.device.type, enabled=False):
            logits = self.segmenter(uint8_to_signed(to_uint8(fake)))
            self.miou.update(logits.argmax(dim=1), label)

    def update_appearance(self, fake: Tensor, target: Tensor, parts: Tensor, identity: Tensor) -> None:
        """Part colours of generated images (in [-1, 1]) against their targets' (see :class:`AppearanceTransfer`)."""
        with torch.autocast(self.device.type, enabled=False):
            self.appearance.update(uint8_to_signed(to_uint8(fake)), target, parts, identity)

    def compute(self) -> dict[str, Tensor]:
        """Every enabled metric, synced across ranks (a collective: call on every rank).

        The first FID computation also finishes the real statistics streamed so far (:meth:`finish_real_stats`)
        and keeps them for later epochs of the same run.
        """
        results = {}
        if self.fid is not None:
            real, generated = (round(sum_over_ranks(count)) for count in (self.fid.real_features_num_samples,
                                                                         self.fid.fake_features_num_samples))
            if min(real, generated) < 2:  # a smoke test's single batch: the other scores are still worth having
                warnings.warn(f"FID needs at least 2 real and 2 generated images, this run has {real} and "
                              f"{generated}: fid is NaN", stacklevel=2)
                results["fid"] = torch.tensor(float("nan"), device=self.device)
            else:
                results["fid"] = self.fid.compute()
            self.finish_real_stats()
        for name in ("lpips", "ssim", "miou"):
            metric: Metric | None = getattr(self, name)
            if metric is not None:
                results[name] = metric.compute()
        if self.appearance is not None:
            results.update(self.appearance.compute())
        return results

    def counts(self) -> dict[str, int]:
        """How many images each score is computed from, summed over ranks (a collective: call on every rank).

        ``fid_real`` and ``fid_generated``; ``lpips`` and ``ssim`` count the values averaged (image pairs, or
        conditions for diversity LPIPS). Call it before :meth:`reset`.
        """
        states = {}
        if self.fid is not None:
            states["fid_real"] = self.fid.real_features_num_samples
            states["fid_generated"] = self.fid.fake_features_num_samples
        for name in ("lpips", "ssim"):
            metric: MeanMetric | None = getattr(self, name)
            if metric is not None:
                states[name] = metric.weight
        return {name: round(sum_over_ranks(state)) for name, state in states.items()}

    def reset(self) -> None:
        """Clear generated-image states; FID real statistics stay."""
        for metric in (self.fid, self.lpips, self.ssim, self.miou, self.appearance):
            if metric is not None:
                metric.reset()
