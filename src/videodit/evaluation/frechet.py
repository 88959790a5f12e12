"""Fréchet distance between two sets of feature vectors, and an FVD-like score on clip features.

The distance between Gaussians fitted to each set (as in FID and FVD):
    d² = ||μ₁ − μ₂||² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

`frechet_video_distance` is NOT the published FVD: that one embeds clips with a pretrained I3D network,
which is not available offline. Here each clip is embedded with `attribute_features` (colour, fill,
size, position, motion, cleanliness), so the score says how far generated clips' looks and motion are
from real ones in those hand-made terms. Compare it only with itself, across models or checkpoints.
"""

from __future__ import annotations

import numpy as np

from videodit.evaluation.attributes import attribute_features


def _covariance(features: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.cov(features, rowvar=False))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; rounding's tiny negatives become 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def _check_features(features: np.ndarray, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"{name} must be [N, D] with N >= 2 rows to estimate a covariance, got {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return features


def frechet_distance(real_features: np.ndarray, gen_features: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to [N, D] and [M, D] feature sets (≥ 0).

    Tr (Σ₁Σ₂)^½ is taken as the sum of square roots of the eigenvalues of Σ₁^½ Σ₂ Σ₁^½, a symmetric
    PSD matrix with the same eigenvalues as Σ₁Σ₂. Unlike `scipy.linalg.sqrtm(Σ₁Σ₂)` this stays real
    and exact when the covariances are singular (e.g. fewer clips than dimensions), so no ε is needed.
    """
    real = _check_features(real_features, "real_features")
    gen = _check_features(gen_features, "gen_features")
    if real.shape[1] != gen.shape[1]:
        raise ValueError(f"feature sizes differ: real has {real.shape[1]}, generated has {gen.shape[1]}")
    mean_gap = real.mean(axis=0) - gen.mean(axis=0)
    real_cov, gen_cov = _covariance(real), _covariance(gen)
    root = _psd_sqrt(real_cov)
    cross = root @ gen_cov @ root
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((cross + cross.T) / 2), 0.0, None)).sum()
    distance = mean_gap @ mean_gap + np.trace(real_cov) + np.trace(gen_cov) - 2.0 * trace_sqrt
    return max(float(distance), 0.0)  # rounding can dip a hair below zero for identical sets


def frechet_video_distance(real_videos: list[np.ndarray], gen_videos: list[np.ndarray]) -> float:
    """FVD-like score: Fréchet distance between the `attribute_features` of two sets of uint8 clips."""
    real = np.stack([attribute_features(video) for video in real_videos])
    gen = np.stack([attribute_features(video) for video in gen_videos])
    return frechet_distance(real, gen)
