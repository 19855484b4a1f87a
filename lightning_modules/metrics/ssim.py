"""SSIM as PIDM (GFLA) reports it: skimage ``structural_similarity(win_size=51, data_range=1)``.

skimage averages the SSIM map only over pixels whose window lies inside the image (it crops (win - 1) / 2 px per
border); torchmetrics averages the whole reflect-padded map. Cropping torchmetrics' full map reproduces skimage.
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure


def cropped_ssim(preds: Tensor, target: Tensor, window: int = 51) -> Tensor:
    """Per-image SSIM with a uniform ``window`` x ``window`` kernel, data range 1, border-cropped mean.

    Args:
        preds: ``(N, C, H, W)`` images in [0, 1]; computed in float64.
        target: Same shape as ``preds``.
        window: Odd window size; PIDM uses 51.

    Returns:
        ``(N,)`` SSIM values, each the mean over channels and the cropped map.
    """
    crop = (window - 1) // 2
    if window % 2 == 0 or min(preds.shape[-2:]) <= 2 * crop:
        raise ValueError(f"SSIM window {window} must be odd and smaller than the images {tuple(preds.shape[-2:])}")
    _, full = structural_similarity_index_measure(
        preds.double(), target.double(), gaussian_kernel=False, kernel_size=window, data_range=1.0,
        reduction="none", return_full_image=True,
    )
    return full[..., crop:-crop, crop:-crop].mean(dim=(1, 2, 3))
