"""Reconstruction quality of uint8 videos [T, H, W, 3]: PSNR and SSIM, as reported for the VAE."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from videodit.evaluation.attributes import check_video

MAX_VALUE = 255.0
# Identical clips have infinite PSNR; averages cap each clip here so one perfect clip keeps the mean finite.
PSNR_CAP_DB = 100.0
# SSIM as in Wang et al. (2004): 11×11 Gaussian window with σ = 1.5, stabilisers C1 and C2.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11×11 window
SSIM_C1 = (0.01 * MAX_VALUE) ** 2
SSIM_C2 = (0.03 * MAX_VALUE) ** 2


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    check_video(a, "a")
    check_video(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"videos differ in shape: a is {a.shape}, b is {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over the whole clip; `inf` when the clips are identical."""
    _check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(MAX_VALUE**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over every frame and colour channel, in [-1, 1]; 1.0 for identical clips.

    Local statistics use a Gaussian window per frame and channel; the border where the window would
    leave the frame is dropped, as in the reference implementation.
    """
    _check_pair(a, b)
    height, width = a.shape[1:3]
    if min(height, width) <= 2 * SSIM_RADIUS:
        raise ValueError(f"SSIM needs frames larger than {2 * SSIM_RADIUS + 1} px, got {height}×{width}")
    x, y = a.astype(np.float64), b.astype(np.float64)

    def local_mean(image: np.ndarray) -> np.ndarray:
        # Blur along H and W only; truncate so the window is exactly 11×11.
        return ndimage.gaussian_filter(image, sigma=(0, SSIM_SIGMA, SSIM_SIGMA, 0), truncate=SSIM_RADIUS / SSIM_SIGMA)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov_xy = local_mean(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov_xy + SSIM_C2)) / (
        (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    )
    inner = slice(SSIM_RADIUS, -SSIM_RADIUS)
    return float(ssim_map[:, inner, inner].mean())
