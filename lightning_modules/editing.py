"""Editing on top of the samplers: regenerating a masked region of an image (SDM inpainting under an edited label
map, PIDM appearance control) and PIDM style interpolation (paper §4.4)."""

from __future__ import annotations

import torch
from torch import Tensor

from collections.abc import Mapping
from typing import Any

from lightning_modules.base import DiffusionLitModule, SamplerSettings
from lightning_modules.diffusion import DiffusionSchedule, SamplerStep, StepCallback, q_sample
from lightning_modules.pidm import PIDMLitModule, PoseStyleGuidance


def _batch_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A float mask broadcastable to ``like`` (B, C, H, W) from (H, W), (1|B, H, W) or (1|B, 1, H, W)."""
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    fits = mask.ndim == 4 and mask.shape[1] == 1 and mask.shape[0] in (1, like.shape[0])
    if not fits or mask.shape[2:] != like.shape[2:]:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(like.shape)}; "
            "expected (H, W), (B, H, W) or (B, 1, H, W) with B 1 or the batch size"
        )
    return mask.to(device=like.device, dtype=like.dtype)


def keep_outside_mask(
    schedule: DiffusionSchedule, reference: Tensor, mask: Tensor, generator: torch.Generator | None = None,
    then: StepCallback | None = None,
) -> StepCallback:
    """A sampler step callback that regenerates only where ``mask`` is 1 and keeps ``reference`` elsewhere.

    After every step y_t ← m·y_t + (1 − m)·q(y_ref, t − 1), i.e. the kept region is the reference noised to the level
    the state has just reached (the official PIDM code uses level t, one step too noisy); after the last step the kept
    region is the reference itself, so it is returned unchanged.

    Args:
        schedule: The (respaced) schedule the sampler walks.
        reference: Images (B, C, H, W) in [-1, 1] whose unmasked region is kept.
        mask: 1 where the image is regenerated, 0 where the reference is kept; (H, W), (B, H, W) or (B, 1, H, W).
        generator: Random generator of the reference's noise, on the reference's device.
        then: Called after the blend with the blended step (e.g. a progress bar).
    """
    mask = _batch_mask(mask, reference)
    schedule = schedule.to(reference.device)

    def blend(step: SamplerStep) -> Tensor:
        if step.t == 0:
            kept = reference
        else:
            t = torch.full((reference.shape[0],), step.t - 1, dtype=torch.int64, device=reference.device)
            noise = torch.randn(reference.shape, generator=generator, device=reference.device, dtype=reference.dtype)
            kept = q_sample(schedule, reference, t, noise)
        blended = mask * step.x + (1 - mask) * kept
        if then is not None:
            then(step._replace(x=blended))
        return blended

    return blend


@torch.no_grad()
def inpaint(
    module: DiffusionLitModule,
    batch: Mapping[str, Any],
    reference: Tensor,
    mask: Tensor,
    *,
    sampling: SamplerSettings | None = None,
    guidance: Any = None,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Regenerate the masked region of ``reference`` under the conditions of ``batch`` and keep the rest (SDM: a new
    or edited label map; PIDM: another source's style in the reference's pose).

    Args:
        module: An SDM or PIDM model.
        batch: The conditions, as :meth:`~lightning_modules.base.DiffusionLitModule.generate_batch` takes them.
        reference: Images (B, C, H, W) in [-1, 1].
        mask: 1 where the image is regenerated, 0 where the reference is kept (see :func:`keep_outside_mask`).
        sampling: Sampler settings (default: the module's).
        guidance: The family's guidance settings (default: the module's).
        generator: Random generator on the module's device (initial noise, reference noise, sampler noise).
        callback: Called after every step with the blended state.
    """
    sampling = module.sampling if sampling is None else sampling
    reference = reference.to(module.device)
    blend = keep_outside_mask(module.sampling_schedule(sampling), reference, mask, generator, callback)
    return module.generate_batch(batch, sampling=sampling, guidance=guidance, generator=generator, callback=blend)


@torch.no_grad()
def appearance_control(
    module: PIDMLitModule,
    source: Tensor,
    reference: Tensor,
    reference_pose: Tensor,
    mask: Tensor,
    *,
    sampling: SamplerSettings | None = None,
    guidance: PoseStyleGuidance | None = None,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Regenerate the masked region of ``reference`` in the style of ``source`` (e.g. swap a garment): PIDM's
    appearance control, :func:`inpaint` with the reference's pose.

    Args:
        module: A PIDM model.
        source: Style images x_s (B, C, H, W) in [-1, 1].
        reference: Reference person images y_ref (B, C, H, W) in [-1, 1].
        reference_pose: The references' poses (B, P, H, W); the result keeps this pose.
        mask: 1 where the image is regenerated, 0 where the reference is kept; (H, W), (B, H, W) or (B, 1, H, W).
        sampling: Sampler settings (default: the module's).
        guidance: Guidance settings (default: the module's).
        generator: Random generator on the module's device (initial noise, reference noise, sampler noise).
        callback: Called after every step with the blended state.
    """
    batch = {"source": source, "target_pose": reference_pose}
    return inpaint(module, batch, reference, mask, sampling=sampling, guidance=guidance, generator=generator,
                   callback=callback)


def slerp(a: Tensor, b: Tensor, weights: Tensor) -> Tensor:
    """Spherical interpolation between two noise tensors (each flattened to one vector) at every weight.

    Returns (len(weights), *a.shape[1:]) from ``a`` and ``b`` of shape (1, ...); weight 0 gives ``a``, 1 gives ``b``.
    """
    flat_a, flat_b = a.flatten(), b.flatten()
    cosine = torch.dot(flat_a, flat_b) / (flat_a.norm() * flat_b.norm())
    theta = torch.arccos(cosine.clamp(-1.0, 1.0))
    w = weights.to(a.dtype).view(-1, *([1] * (a.ndim - 1)))
    if float(torch.sin(theta)) < 1e-6:  # (anti)parallel noises: fall back to a straight line
        return torch.lerp(a, b, w)
    return (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / torch.sin(theta)


@torch.no_grad()
def interpolate_styles(
    module: PIDMLitModule,
    source_a: Tensor,
    source_b: Tensor,
    pose: Tensor,
    num_mixes: int,
    *,
    noise: tuple[Tensor, Tensor] | None = None,
    sampling: SamplerSettings | None = None,
    guidance: PoseStyleGuidance | None = None,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """``num_mixes`` images morphing from source A's appearance to source B's, all in ``pose`` (DDIM).

    Mix k (weight α_k = k / (num_mixes − 1)) starts from slerp(y_T^A, y_T^B, α_k) and attends to the texture
    features lerp(F_A, F_B, α_k); the two ends are plain DDIM samples of each source from its own noise.

    Args:
        module: A PIDM model.
        source_a: First source image (1, C, H, W) in [-1, 1].
        source_b: Second source image (1, C, H, W).
        pose: Target pose (1, P, H, W).
        num_mixes: Number of images k >= 2, evenly spaced including both ends.
        noise: The two initial noises (each (1, C, H, W)); default: drawn from ``generator``, A first.
        sampling: Sampler settings; the sampler must be ``ddim`` with eta 0 (default: DDIM with the module's steps).
        guidance: Guidance settings (default: the module's).
        generator: Random generator on the module's device.
        callback: Called after every denoising step.

    Returns:
        (num_mixes, C, H, W) in [-1, 1].
    """
    sampling = SamplerSettings("ddim", module.sampling.steps) if sampling is None else sampling
    if sampling.sampler != "ddim" or sampling.eta != 0.0:
        raise ValueError(f"style interpolation needs deterministic DDIM, got {sampling.sampler} with eta "
                         f"{sampling.eta}")
    if num_mixes < 2:
        raise ValueError(f"num_mixes must be >= 2, got {num_mixes}")
    for name, tensor in (("source_a", source_a), ("source_b", source_b), ("pose", pose)):
        if tensor.ndim != 4 or tensor.shape[0] != 1:
            raise ValueError(f"{name} must be a single example (1, C, H, W), got {tuple(tensor.shape)}")
    device = module.device
    source_a, source_b, pose = source_a.to(device), source_b.to(device), pose.to(device)
    shape = (1, module.image_channels, *pose.shape[2:])
    if noise is None:
        noise = tuple(torch.randn(shape, generator=generator, device=device) for _ in range(2))
    weights = torch.linspace(0, 1, num_mixes, device=device)
    x_T = slerp(noise[0].to(device), noise[1].to(device), weights)
    features = module.net.encode(torch.cat([source_a, source_b]))
    texture = [torch.lerp(f[:1], f[1:], weights.view(-1, 1, 1, 1)) for f in features]
    rule = (module.guidance if guidance is None else guidance).rule()
    poses = pose.expand(num_mixes, -1, -1, -1)
    null = module.null_texture(num_mixes, source_a) if module.needs_null_style(rule) else None
    variants = module.guidance_variants(rule, poses, texture, null)
    return module.sample(variants, rule, x_T.shape, sampling=sampling, generator=generator, callback=callback,
                         x_T=x_T).clamp(-1, 1)
