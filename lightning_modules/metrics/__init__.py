"""Evaluation metrics (FID, LPIPS, SSIM, mIoU) with offline-friendly weight resolution; see docs/evaluation.md."""

from lightning_modules.metrics.config import EvaluationConfig, FIDConfig, LPIPSConfig, MIoUConfig, SSIMConfig
from lightning_modules.metrics.evaluation import EvaluationMetrics
from lightning_modules.metrics.weights import WEIGHTS, MissingWeightsError, resolve_weights, resolve_weights_dir

__all__ = [
    "WEIGHTS",
    "EvaluationConfig",
    "EvaluationMetrics",
    "FIDConfig",
    "LPIPSConfig",
    "MIoUConfig",
    "MissingWeightsError",
    "SSIMConfig",
    "resolve_weights",
    "resolve_weights_dir",
]
