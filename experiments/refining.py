"""Chaining a refiner (PCDMs' refinement stage, ``lightning_modules.refiner``) after a PIDM first stage:
``--refiner CKPT`` with ``--refiner_sampling.*`` and ``--refiner_guidance.*`` in ``experiments.predict`` and
``experiments.test``."""

from __future__ import annotations

from pathlib import Path

from experiments.errors import CommandError
from experiments.predict import GuidanceOverride, SamplingOverride
from lightning_modules.checkpoint_loading import load_diffusion_module
from lightning_modules.pidm import ChainedRefiner, PIDMLitModule
from lightning_modules.refiner import RefinerLitModule


def load_chained_refiner(
    path: str | Path, first_stage: PIDMLitModule, sampling: SamplingOverride | None = None,
    guidance: GuidanceOverride | None = None, strength: float | None = None,
) -> ChainedRefiner:
    """The refiner checkpoint at ``path``, checked to fit ``first_stage``'s images and poses, with its sampler,
    guidance and ``strength`` (where sampling starts) overridden by the given ones.

    Raises:
        CommandError: The file is missing, is no refiner, does not fit the first stage, or an override is invalid.
    """
    sampling = SamplingOverride() if sampling is None else sampling
    guidance = GuidanceOverride() if guidance is None else guidance
    if isinstance(first_stage, RefinerLitModule) or not isinstance(first_stage, PIDMLitModule):
        raise CommandError(f"--refiner refines a PIDM first stage's images; the model given is a "
                           f"{type(first_stage).__name__}")
    try:
        refiner = load_diffusion_module(path)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(f"--refiner: {error}") from None
    if not isinstance(refiner, RefinerLitModule):
        raise CommandError(f"--refiner {path} holds a {type(refiner).__name__}, not a refiner "
                           "(lightning_modules.refiner.RefinerLitModule, configs/pidm/persons_refiner.yaml)")
    if refiner.image_channels != first_stage.image_channels:
        raise CommandError(f"--refiner {path} refines {refiner.image_channels}-channel images, the first stage makes "
                           f"{first_stage.image_channels}-channel ones")
    if refiner.condition_on_pose and refiner.pose_channels != first_stage.pose_channels:
        raise CommandError(f"--refiner {path} reads {refiner.pose_channels} pose channels, the first stage's poses "
                           f"have {first_stage.pose_channels}")
    try:
        settings = refiner.sampling.overridden(sampling.sampler, sampling.steps, sampling.eta, sampling.seed)
    except ValueError as error:
        raise CommandError(f"--refiner_sampling: {error}") from None
    try:
        rule = refiner.guidance.override(guidance.form, guidance.w_pose, guidance.w_style, guidance.scale)
    except ValueError as error:
        raise CommandError(f"--refiner_guidance: {error}") from None
    if strength is not None:
        if not 0.0 < strength <= 1.0:
            raise CommandError(f"--refiner_strength must lie in (0, 1], got {strength}")
        refiner.strength = strength
    return ChainedRefiner(refiner.eval(), str(path), settings, rule)
