"""Forward process, posterior and reverse-step prediction of ε-prediction diffusion (the loss: ``losses.py``).

A step index ``t`` is an index into the schedule (0..num_steps-1); networks are called through a plain
``denoise(x_t, schedule.timesteps[t]) -> output`` callable. Outputs carry ε̂ in their first C channels (C = image
channels) followed, with ``variance="learned_range"``, by C channels of the raw variance interpolant v.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_modules.diffusion.schedule import DiffusionSchedule, extract

VARIANCES = ("learned_range", "fixed_small", "fixed_large")

Denoiser = Callable[[Tensor, Tensor], Tensor]


def full_precision(output: Tensor) -> Tensor:
    """A network output in float32 (float64 stays), whatever precision autocast or reduced weights gave it.

    Every function here and in the samplers runs the diffusion math in full precision: in bfloat16 the learned-range
    log variance collapses to one value over most steps and the variational term loses its gradient.
    """
    return output if output.dtype in (torch.float32, torch.float64) else output.float()


class PosteriorPrediction(NamedTuple):
    """The model's p(x_{t−1} | x_t) and the quantities it was built from."""

    mean: Tensor
    variance: Tensor
    log_variance: Tensor
    pred_x0: Tensor
    eps: Tensor


def split_output(output: Tensor, channels: int, variance: str) -> tuple[Tensor, Tensor | None]:
    """Split a network output into ε̂ and (for ``"learned_range"``) v, checking the channel count.

    Both parts come back in full precision (:func:`full_precision`).

    Args:
        output: Network output (B, C or 2C, ...).
        channels: C, the number of image channels.
        variance: One of ``VARIANCES``; fixed variances accept C or 2C channels and ignore v.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; expected one of {VARIANCES}")
    allowed = (2 * channels,) if variance == "learned_range" else (channels, 2 * channels)
    if output.shape[1] not in allowed:
        raise ValueError(
            f"network output has {output.shape[1]} channels; variance={variance!r} with {channels} image channels "
            f"needs {' or '.join(map(str, allowed))}"
        )
    output = full_precision(output)
    if variance == "learned_range":
        return output[:, :channels], output[:, channels:]
    return output[:, :channels], None


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the batch."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def q_sample(schedule: DiffusionSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Sample x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·noise."""
    return (
        extract(schedule.sqrt_alphas_cumprod, t, x0) * x0
        + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise
    )


def q_posterior(schedule: DiffusionSchedule, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, variance and clipped log variance of q(x_{t−1} | x_t, x0)."""
    mean = extract(schedule.posterior_mean_coef1, t, x_t) * x0 + extract(schedule.posterior_mean_coef2, t, x_t) * x_t
    variance = extract(schedule.posterior_variance, t, x_t)
    log_variance = extract(schedule.posterior_log_variance_clipped, t, x_t)
    return mean, variance.expand_as(x_t), log_variance.expand_as(x_t)


def predict_x0_from_eps(schedule: DiffusionSchedule, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x̂0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε̂."""
    return extract(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - extract(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t
    ) * eps


def predict_eps_from_x0(schedule: DiffusionSchedule, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """ε = (√(1/ᾱ_t)·x_t − x0) / √(1/ᾱ_t − 1), the noise consistent with a given x0."""
    return (extract(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / extract(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t
    )


def learned_range_log_variance(schedule: DiffusionSchedule, v: Tensor, t: Tensor) -> Tensor:
    """iDDPM log σ² = frac·log β_t + (1 − frac)·log β̃_t (clipped), frac = (v + 1)/2; v is used raw (no tanh)."""
    frac = (v + 1) / 2
    return frac * extract(schedule.log_betas, t, v) + (1 - frac) * extract(
        schedule.posterior_log_variance_clipped, t, v
    )


def p_mean_variance(
    schedule: DiffusionSchedule,
    output: Tensor,
    x_t: Tensor,
    t: Tensor,
    *,
    variance: str = "learned_range",
    clip_x0: bool = True,
) -> PosteriorPrediction:
    """The model's reverse step p(x_{t−1} | x_t) from a raw network output.

    Args:
        schedule: The diffusion schedule; ``t`` indexes it.
        output: Network output at (x_t, t): ε̂, then v for ``"learned_range"``.
        x_t: Noisy input (B, C, ...).
        t: Step indices (B,).
        variance: ``"learned_range"`` (from v), ``"fixed_small"`` (β̃_t) or ``"fixed_large"`` (β_t, with β̃_1 at t=0).
        clip_x0: Clamp x̂0 to [-1, 1] before forming the mean. ``eps`` is returned as predicted, not re-derived.
    """
    eps, v = split_output(output, x_t.shape[1], variance)
    if variance == "learned_range":
        log_variance = learned_range_log_variance(schedule, v, t)
        model_variance = torch.exp(log_variance)
    elif variance == "fixed_small":
        # β̃_0 = 0 exactly; only its log is clipped.
        model_variance = extract(schedule.posterior_variance, t, x_t).expand_as(x_t)
        log_variance = extract(schedule.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
    else:
        log_variance = extract(schedule.fixed_large_log_variance, t, x_t).expand_as(x_t)
        model_variance = torch.exp(log_variance)
    pred_x0 = predict_x0_from_eps(schedule, x_t, t, eps)
    if clip_x0:
        pred_x0 = pred_x0.clamp(-1, 1)
    mean, _, _ = q_posterior(schedule, pred_x0, x_t, t)
    return PosteriorPrediction(mean, model_variance, log_variance, pred_x0, eps)
