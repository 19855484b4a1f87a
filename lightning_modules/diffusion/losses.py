"""The training loss of ε-prediction diffusion: L_simple plus the single-step variational term (iDDPM's hybrid).

``training_losses`` is what the LightningModules minimise; :func:`variational_bound_term` is the learned-variance
part of it and :func:`min_snr_weight` an optional weighting of the ε term.
"""

import math

import torch
from torch import Tensor

from lightning_modules.diffusion.gaussian import (
    Denoiser,
    mean_flat,
    p_mean_variance,
    q_posterior,
    q_sample,
    split_output,
)
from lightning_modules.diffusion.likelihoods import discretized_gaussian_log_likelihood, normal_kl
from lightning_modules.diffusion.schedule import DiffusionSchedule


def variational_bound_term(
    schedule: DiffusionSchedule, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor
) -> Tensor:
    """The single-step variational bound term per sample, in bits per dimension, for a learned-range output.

    KL(q(x_{t−1} | x_t, x0) ‖ p(x_{t−1} | x_t)) for t > 0 and the discretised-Gaussian decoder NLL of x0 at t = 0,
    with x̂0 not clamped.
    """
    true_mean, _, true_log_variance = q_posterior(schedule, x0, x_t, t)
    pred = p_mean_variance(schedule, output, x_t, t, variance="learned_range", clip_x0=False)
    kl = mean_flat(normal_kl(true_mean, true_log_variance, pred.mean, pred.log_variance)) / math.log(2.0)
    decoder_nll = -mean_flat(
        discretized_gaussian_log_likelihood(x0, pred.mean, 0.5 * pred.log_variance)
    ) / math.log(2.0)
    return torch.where(t.to(kl.device) == 0, decoder_nll, kl)


def training_losses(
    schedule: DiffusionSchedule,
    denoise: Denoiser,
    x0: Tensor,
    t: Tensor,
    noise: Tensor | None = None,
    *,
    variance: str = "learned_range",
    vlb_weight: float = 1.0,
    min_snr_gamma: float | None = None,
) -> dict[str, Tensor]:
    """Per-sample training losses (each of shape (B,)) of an ε-predicting network.

    ``mse`` is the mean over C,H,W of (ε − ε̂)². With ``variance="learned_range"``, ``vb`` is
    :func:`variational_bound_term` on the output with its ε̂ half detached, so it only trains v, and
    ``loss = mse + vlb_weight·vb``. The default ``vlb_weight=1`` with this one-step term equals iDDPM's hybrid
    objective L_simple + λ·L_vlb with λ = 0.001 at T = 1000, because L_vlb is estimated as T times the sampled
    step's term (the official SDM and PIDM setting). With a fixed variance there is nothing for the bound to
    train, so ``vb`` is omitted and ``loss = mse``. With ``min_snr_gamma`` the ``mse`` term of ``loss`` is weighted
    by :func:`min_snr_weight` (``mse`` itself is reported unweighted).

    Args:
        schedule: The diffusion schedule; ``t`` indexes it.
        denoise: ``denoise(x_t, schedule.timesteps[t])`` returning the raw network output.
        x0: Clean images (B, C, ...) in [-1, 1].
        t: Step indices (B,).
        noise: The ε used for x_t; drawn with ``torch.randn_like`` when omitted.
        variance: One of ``"learned_range"``, ``"fixed_small"``, ``"fixed_large"``.
        vlb_weight: Weight of ``vb`` in ``loss``.
        min_snr_gamma: γ of the Min-SNR weighting of ``mse``; None leaves it unweighted (L_simple).
    """
    schedule = schedule.to(x0.device)
    if noise is None:
        noise = torch.randn_like(x0)
    x_t = q_sample(schedule, x0, t, noise)
    output = denoise(x_t, schedule.timesteps[t])
    eps, v = split_output(output, x0.shape[1], variance)
    mse = mean_flat((noise - eps) ** 2)
    weighted_mse = mse if min_snr_gamma is None else min_snr_weight(schedule, t, min_snr_gamma).to(mse.dtype) * mse
    if v is None:
        return {"loss": weighted_mse, "mse": mse}
    vb = variational_bound_term(schedule, torch.cat([eps.detach(), v], dim=1), x0, x_t, t)
    return {"loss": weighted_mse + vlb_weight * vb, "mse": mse, "vb": vb}


def min_snr_weight(schedule: DiffusionSchedule, t: Tensor, gamma: float) -> Tensor:
    """Min-SNR-γ loss weight of ε-prediction (Hang et al., 2023): min(SNR_t, γ) / SNR_t, SNR_t = ᾱ_t / (1 − ᾱ_t).

    It caps the weight of the low-noise steps, whose fine-detail ε errors otherwise dominate L_simple, so more of
    the gradient goes to the noisy steps that decide layout and colour; steps with SNR ≤ γ keep weight 1.
    """
    if gamma <= 0:
        raise ValueError(f"min_snr_gamma must be positive, got {gamma}")
    alpha_bar = schedule.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1.0 - alpha_bar)
    return snr.clamp(max=gamma) / snr
