"""PCDMs' refining stage (Shen et al. 2024, stage 3): a PIDM-style model that restores texture and detail of a first
stage's coarse person images.

The refiner is PIDM's network with another spatial condition: the noisy target is concatenated on channels with
the coarse image (and, by default, the target pose); the source image still reaches it through the texture encoder
and the cross-attention blocks. Diffusion core, hybrid loss, EMA, test loop and guidance are PIDM's: the guidance's
"pose" condition is the coarse image (with the pose) and its "style" condition the source, so ``w_pose`` weighs the
coarse image, ``w_style`` (or the ``style_only`` scale) the source; condition dropout drops each of them.

Batches carry PIDM's keys plus ``coarse`` (B, 3, H, W) in [-1, 1] (``datamodules.refinement``). At test time the
coarse images are scored too, as the ``coarse`` set beside the refined ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_modules.base import SamplerSettings, settings
from lightning_modules.diffusion import Guidance, q_sample
from lightning_modules.evaluation_io import TestOutputDir
from lightning_modules.metrics import EvaluationMetrics
from lightning_modules.nets.pidm_unet import PIDMUNetConfig
from lightning_modules.pidm import (
    DropoutMode,
    PIDMLitModule,
    PoseStyleGuidance,
    _per_sample,
    check_person_metrics,
    condition_keep_masks,
    pose_preview,
    refinement_noise,
    save_person_images,
    score_person_images,
    test_pair_names,
)


class RefinerLitModule(PIDMLitModule):
    """Refines coarse person images: ε-prediction of the target given the coarse image (+ target pose) and the source.

    Args:
        pose_channels: Channels of the target pose (linked from the DataModule); used with ``condition_on_pose``.
        pose_window: Poses per target (linked from the DataModule).
        condition_on_pose: Concatenate the target pose to the coarse image (PCDMs conditions the refiner on the
            coarse image and the source only; the pose helps where the coarse image lost a limb).
        network: The noise predictor's and texture encoder's architecture (PIDM's).
        guidance: Guidance of grids, ``predict --refiner`` and the test command (``w_pose``: coarse image).
        condition_drop_prob: η, the condition-dropout probability of the coarse image and of the source.
        condition_dropout: ``independent``, ``joint`` or ``style_only`` (see
            :func:`lightning_modules.pidm.condition_keep_masks`; "pose" is the coarse image here).
        strength: Where sampling starts: 1 from pure noise (PCDMs); below 1 from the coarse image noised to that
            fraction of the sampler's steps (SDEdit, as SDXL's refiner), which keeps its layout and colours and
            redraws the detail. Training does not depend on it.
        **kwargs: Diffusion, optimizer, sampling and initialisation options of
            :class:`~lightning_modules.base.DiffusionLitModule`.
    """

    def __init__(
        self,
        pose_channels: int = 20,
        pose_window: int = 1,
        condition_on_pose: bool = True,
        network: PIDMUNetConfig = PIDMUNetConfig(),
        guidance: PoseStyleGuidance = PoseStyleGuidance(),
        condition_drop_prob: float = 0.1,
        condition_dropout: DropoutMode = "independent",
        strength: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must lie in (0, 1], got {strength}")
        network = settings(PIDMUNetConfig, network)
        if pose_channels is None or pose_channels < 1:
            raise ValueError(f"RefinerLitModule needs pose_channels >= 1, got {pose_channels}; it is linked from the "
                             "DataModule's pose_channels (or set model.init_args.pose_channels)")
        spatial = network.image_channels + (pose_channels if condition_on_pose else 0)
        # PIDM's network reads its spatial condition as "pose": here the coarse image, with the pose after it.
        super().__init__(spatial, 1, network, guidance, condition_drop_prob, condition_dropout, **kwargs)
        self.pose_channels = pose_channels
        self.pose_window = pose_window
        self.condition_on_pose = condition_on_pose
        self.strength = strength

    def spatial_condition(self, coarse: Tensor, pose: Tensor) -> Tensor:
        """The channels concatenated to the noisy image: the coarse image, then (``condition_on_pose``) the pose."""
        if coarse.shape[1] != self.image_channels or coarse.shape[-2:] != pose.shape[-2:]:
            raise ValueError(f"coarse images {tuple(coarse.shape)} must have {self.image_channels} channels and the "
                             f"pose's size {tuple(pose.shape[-2:])}")
        return torch.cat([coarse, pose], dim=1) if self.condition_on_pose else coarse

    # --- training -----------------------------------------------------------------------------------------------

    def training_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        target, source = batch["target"], batch["source"]
        condition = self.spatial_condition(batch["coarse"], batch["target_pose"])
        if self.training and self.condition_drop_prob > 0:
            keep_coarse, keep_style = condition_keep_masks(
                target.shape[0], self.condition_drop_prob, self.condition_dropout, target.device
            )
            condition = condition * _per_sample(keep_coarse, condition)
            source = source * _per_sample(keep_style, source)
        return target, {"pose": condition, "source": source}

    # --- sampling -----------------------------------------------------------------------------------------------

    def guided_conditions(
        self, batch: Mapping[str, Any], guidance: PoseStyleGuidance | None = None, net: nn.Module | None = None
    ) -> tuple[dict[str, dict[str, Any]], Guidance, tuple[int, ...]]:
        """PIDM's variants with the coarse image (and pose) as the spatial condition."""
        if "coarse" not in batch:
            raise KeyError("a refiner batch needs 'coarse' images (datamodules.refinement, or a chained first stage)")
        condition = self.spatial_condition(batch["coarse"], batch["target_pose"])
        return super().guided_conditions({**batch, "target_pose": condition}, guidance, net)

    @torch.no_grad()
    def generate_batch(self, batch: Mapping[str, Any], *, sampling: SamplerSettings | None = None,
                       x_T: Tensor | None = None, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """PIDM's sampling with the batch's coarse images as the condition; below ``strength`` 1 it starts from the
        coarse image noised to step ``round(strength * steps)`` (``x_T`` is then that noise)."""
        sampling = self.sampling if sampling is None else sampling
        if self.strength >= 1.0:
            return super().generate_batch(batch, sampling=sampling, x_T=x_T, generator=generator, **options)
        schedule = self.sampling_schedule(sampling)
        first_steps = max(1, round(self.strength * schedule.num_steps))
        coarse = batch["coarse"].to(self.device)
        noise = torch.randn(coarse.shape, generator=generator, device=self.device) if x_T is None else x_T
        t = torch.full((coarse.shape[0],), first_steps - 1, dtype=torch.int64, device=self.device)
        start = q_sample(schedule, coarse, t, noise)
        return super().generate_batch(batch, sampling=sampling, x_T=start, generator=generator,
                                      first_steps=first_steps, **options)

    @torch.no_grad()
    def refine(self, source: Tensor, pose: Tensor, coarse: Tensor, **sampling_options: Any) -> Tensor:
        """Refined images (B, C, H, W) of ``coarse`` for ``source`` in ``pose``; ``sampling_options`` are those of
        :meth:`generate_batch` (``sampling``, ``guidance``, ``generator``, ``x_T``, ``callback``)."""
        return self.generate_batch({"source": source, "target_pose": pose, "coarse": coarse}, **sampling_options)

    # --- test and grids -----------------------------------------------------------------------------------------

    @property
    def scores_coarse_images(self) -> bool:
        return True

    def evaluate_test_batch(self, batch: Mapping[str, Any], metrics: EvaluationMetrics, outputs: TestOutputDir) -> None:
        """Refine the batch's coarse images; score the refined images in ``metrics`` and the coarse ones in the
        ``coarse`` set; PNGs as PIDM's plus ``coarse/``."""
        check_person_metrics(metrics, batch)
        names = test_pair_names(batch)
        x_T = refinement_noise(names, tuple(batch["coarse"].shape[1:]), self.test_sampling.seed, self.device)
        refined = self.generate_batch(batch, sampling=self.test_sampling, x_T=x_T)
        score_person_images(metrics, refined, batch)
        score_person_images(self.test_metric_sets["coarse"], batch["coarse"], batch)
        save_person_images(outputs, names, batch, refined, coarse=batch["coarse"])

    def image_log_columns(
        self, batch: Mapping[str, Any], generated: Tensor, palette: Tensor | None = None
    ) -> list[Tensor]:
        """Source | target pose | coarse | refined | target."""
        device = generated.device
        columns = [batch["source"].to(device), pose_preview(batch["target_pose"].to(device)),
                   batch["coarse"].to(device), generated]
        if "target" in batch:
            columns.append(batch["target"].to(device))
        return columns
