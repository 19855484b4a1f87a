"""Diffusion math in plain PyTorch: schedules, losses, samplers and guidance (no Lightning, no networks)."""

from lightning_modules.diffusion.gaussian import (
    VARIANCES,
    PosteriorPrediction,
    p_mean_variance,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior,
    q_sample,
    learned_range_log_variance,
    split_output,
)
from lightning_modules.diffusion.guidance import (
    Guidance,
    classifier_free,
    disentangled,
    guided_denoiser,
    nested,
    style_only,
)
from lightning_modules.diffusion.likelihoods import (
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    normal_kl,
)
from lightning_modules.diffusion.losses import min_snr_weight, training_losses, variational_bound_term
from lightning_modules.diffusion.samplers import SAMPLERS, SamplerStep, StepCallback, ddim, ddpm, dpmpp_2m
from lightning_modules.diffusion.schedule import DiffusionSchedule, beta_schedule, extract, space_timesteps
from lightning_modules.diffusion.timesteps import LossSecondMomentSampler, TimestepSampler, UniformTimestepSampler

__all__ = [
    "SAMPLERS",
    "VARIANCES",
    "DiffusionSchedule",
    "Guidance",
    "LossSecondMomentSampler",
    "PosteriorPrediction",
    "SamplerStep",
    "StepCallback",
    "TimestepSampler",
    "UniformTimestepSampler",
    "approx_standard_normal_cdf",
    "beta_schedule",
    "classifier_free",
    "ddim",
    "ddpm",
    "discretized_gaussian_log_likelihood",
    "disentangled",
    "dpmpp_2m",
    "extract",
    "guided_denoiser",
    "learned_range_log_variance",
    "min_snr_weight",
    "nested",
    "normal_kl",
    "p_mean_variance",
    "predict_eps_from_x0",
    "predict_x0_from_eps",
    "q_posterior",
    "q_sample",
    "space_timesteps",
    "split_output",
    "style_only",
    "training_losses",
    "variational_bound_term",
]
