"""Reverse-process samplers sharing one signature.

``sampler(denoise, x_T, schedule, *, clip_x0=True, variance="learned_range", eta=0.0, callback=None,
generator=None, shared_noise=False) -> x_0``. Each walks the given (possibly respaced) schedule from its last step
down to step 0, calling ``denoise(x, schedule.timesteps[t])`` once per step; only the first ``x_T.shape[1]``
output channels are used as ε̂. After every step ``callback(SamplerStep(...))`` runs; if it returns a tensor, that
tensor replaces x (e.g. an inpainting blend with a noised reference, at the noise level of step t − 1). With
``shared_noise`` every image of the batch gets the same per-step noise (one draw of shape (1, C, H, W) per step:
frames of an animation that should not flicker, given the same x_T too); the draws do not depend on the batch size.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_modules.diffusion.gaussian import (
    Denoiser,
    p_mean_variance,
    predict_eps_from_x0,
    predict_x0_from_eps,
    split_output,
)
from lightning_modules.diffusion.schedule import DiffusionSchedule, extract


class SamplerStep(NamedTuple):
    """State after one sampler step.

    Attributes:
        step: Number of the step just taken (0 for the first, num_steps − 1 for the last).
        t: Schedule index that was denoised; ``x`` is now at the noise level of index t − 1 (clean after t = 0).
        x: The new state.
        pred_x0: The x̂0 predicted at this step.
    """

    step: int
    t: int
    x: Tensor
    pred_x0: Tensor


StepCallback = Callable[[SamplerStep], Tensor | None]


def _noise_like(x: Tensor, generator: torch.Generator | None, shared: bool = False) -> Tensor:
    if shared:
        return torch.randn((1, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype).expand_as(x)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _run_callback(callback: StepCallback | None, step: SamplerStep) -> Tensor:
    if callback is None:
        return step.x
    replacement = callback(step)
    return step.x if replacement is None else replacement


def ddpm(
    denoise: Denoiser,
    x_T: Tensor,
    schedule: DiffusionSchedule,
    *,
    clip_x0: bool = True,
    variance: str = "learned_range",
    eta: float = 0.0,
    callback: StepCallback | None = None,
    generator: torch.Generator | None = None,
    shared_noise: bool = False,
) -> Tensor:
    """Ancestral sampling from p(x_{t−1} | x_t) with the model's variance; no noise is added at the last step."""
    if eta != 0.0:
        raise ValueError(f"ddpm has no eta parameter (got eta={eta}); eta applies to 'ddim' and 'dpmpp_2m'")
    schedule = schedule.to(x_T.device)
    x = x_T
    for step, i in enumerate(reversed(range(schedule.num_steps))):
        t = torch.full((x.shape[0],), i, dtype=torch.int64, device=x.device)
        pred = p_mean_variance(
            schedule, denoise(x, schedule.timesteps[t]), x, t, variance=variance, clip_x0=clip_x0
        )
        x = pred.mean
        if i > 0:
            x = x + torch.exp(0.5 * pred.log_variance) * _noise_like(x, generator, shared_noise)
        x = _run_callback(callback, SamplerStep(step, i, x, pred.pred_x0))
    return x


def ddim(
    denoise: Denoiser,
    x_T: Tensor,
    schedule: DiffusionSchedule,
    *,
    clip_x0: bool = True,
    variance: str = "learned_range",
    eta: float = 0.0,
    callback: StepCallback | None = None,
    generator: torch.Generator | None = None,
    shared_noise: bool = False,
) -> Tensor:
    """DDIM: x_prev = √ᾱ_prev·x̂0 + √(1 − ᾱ_prev − σ²)·ε + σ·z, σ = η·√((1 − ᾱ_prev)/(1 − ᾱ))·√(1 − ᾱ/ᾱ_prev).

    With ``clip_x0`` the clamped x̂0 is used and ε is re-derived from it (official SDM); otherwise ε̂ is used as
    predicted (official PIDM). ᾱ_prev = 1 at the last step, which therefore returns x̂0. ``variance`` only
    validates the output's channel count.
    """
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")
    schedule = schedule.to(x_T.device)
    x = x_T
    for step, i in enumerate(reversed(range(schedule.num_steps))):
        t = torch.full((x.shape[0],), i, dtype=torch.int64, device=x.device)
        eps, _ = split_output(denoise(x, schedule.timesteps[t]), x.shape[1], variance)
        pred_x0 = predict_x0_from_eps(schedule, x, t, eps)
        if clip_x0:
            pred_x0 = pred_x0.clamp(-1, 1)
            eps = predict_eps_from_x0(schedule, x, t, pred_x0)
        alpha_bar = extract(schedule.alphas_cumprod, t, x)
        alpha_bar_prev = extract(schedule.alphas_cumprod_prev, t, x)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        x = pred_x0 * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        if eta > 0 and i > 0:
            x = x + sigma * _noise_like(x, generator, shared_noise)
        x = _run_callback(callback, SamplerStep(step, i, x, pred_x0))
    return x


def dpmpp_2m(
    denoise: Denoiser,
    x_T: Tensor,
    schedule: DiffusionSchedule,
    *,
    clip_x0: bool = True,
    variance: str = "learned_range",
    eta: float = 0.0,
    callback: StepCallback | None = None,
    generator: torch.Generator | None = None,
    shared_noise: bool = False,
) -> Tensor:
    """DPM-Solver++(2M): second-order multistep solver in data prediction; with ``eta`` > 0 its SDE variant.

    Uses the schedule's ᾱ (α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), λ_t = log(α_t/σ_t), h = λ_next − λ_t). Each step is
    x_next = (σ_next/σ_t)·e^{−ηh}·x + α_next·(1 − e^{−(1+η)h})·D + σ_next·√(1 − e^{−2ηh})·z, where D is x̂0 at the
    first step and afterwards x̂0 extrapolated from the last two predictions (D = x̂0 + (x̂0 − x̂0_prev)/(2r),
    r = h_previous / h). ``eta`` = 0 is the ODE solver (Lu et al., 2022); ``eta`` = 1 the SDE solver of the same
    paper, whose first-order step is the DDPM posterior at x̂0 (DDIM with η = 1). The update into index 0 is first
    order ("lower order final": over an evenly strided respacing its log-SNR step is several times the previous
    one, and the extrapolation would then overshoot), and the final step returns x̂0 of step 0.
    """
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")
    alphas_cumprod = schedule.alphas_cumprod.tolist()
    schedule = schedule.to(x_T.device)
    x = x_T
    previous_x0, previous_h = None, None
    for step, i in enumerate(reversed(range(schedule.num_steps))):
        t = torch.full((x.shape[0],), i, dtype=torch.int64, device=x.device)
        eps, _ = split_output(denoise(x, schedule.timesteps[t]), x.shape[1], variance)
        pred_x0 = predict_x0_from_eps(schedule, x, t, eps)
        if clip_x0:
            pred_x0 = pred_x0.clamp(-1, 1)
        if i == 0:
            x = pred_x0
        else:
            alpha_bar, alpha_bar_next = alphas_cumprod[i], alphas_cumprod[i - 1]
            log_snr = 0.5 * math.log(alpha_bar / (1 - alpha_bar))
            h = 0.5 * math.log(alpha_bar_next / (1 - alpha_bar_next)) - log_snr
            data = pred_x0
            if previous_x0 is not None and i > 1:
                data = pred_x0 + h / (2 * previous_h) * (pred_x0 - previous_x0)
            sigma_ratio = math.sqrt((1 - alpha_bar_next) / (1 - alpha_bar))
            x = (sigma_ratio * math.exp(-eta * h) * x
                 - math.sqrt(alpha_bar_next) * math.expm1(-(1 + eta) * h) * data)
            if eta > 0:
                noise_std = math.sqrt(1 - alpha_bar_next) * math.sqrt(-math.expm1(-2 * eta * h))
                x = x + noise_std * _noise_like(x, generator, shared_noise)
            previous_x0, previous_h = pred_x0, h
        x = _run_callback(callback, SamplerStep(step, i, x, pred_x0))
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {"ddpm": ddpm, "ddim": ddim, "dpmpp_2m": dpmpp_2m}
