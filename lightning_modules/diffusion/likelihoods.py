"""Elementwise likelihood terms of the variational bound (in nats)."""

import math

import torch
from torch import Tensor

_HALF_BIN = 1.0 / 255.0  # half-width of one 8-bit intensity bin in [-1, 1]
_EDGE = 0.999  # pixels beyond ±_EDGE fall in the open-ended first/last bin
_MIN_PROB = 1e-12


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) ‖ N(mean2, exp(logvar2))) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Standard normal CDF via the tanh approximation 0.5·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """Log-probability of 8-bit images ``x`` in [-1, 1] under a Gaussian discretised into 256 bins.

    Args:
        x: Clean images scaled to [-1, 1].
        means: Gaussian means, same shape as ``x``.
        log_scales: Log standard deviations (half the log variance), same shape as ``x``.
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(
            f"shapes differ: x {tuple(x.shape)}, means {tuple(means.shape)}, log_scales {tuple(log_scales.shape)}"
        )
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + _HALF_BIN))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - _HALF_BIN))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=_MIN_PROB))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=_MIN_PROB))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=_MIN_PROB))
    return torch.where(
        x < -_EDGE, log_cdf_plus, torch.where(x > _EDGE, log_one_minus_cdf_min, log_cdf_delta)
    )
