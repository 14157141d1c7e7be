"""Fréchet distance between Gaussians fitted to embeddings, computed without ``scipy.linalg.sqrtm``.

``FD = |mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr (S1 S2)^(1/2)``. The trace term uses the identity
``Tr (S1 S2)^(1/2) = sum_i sqrt(lambda_i)`` with ``lambda_i`` the eigenvalues of the symmetric PSD
matrix ``S1^(1/2) S2 S1^(1/2)``; both square roots come from symmetric eigendecompositions with
negative round-off clamped to 0. It needs no epsilon retry and stays exact when a covariance is
singular (fewer clips than dimensions), where ``sqrtm`` of the non-symmetric product is fragile
and changes between SciPy releases.
"""

from __future__ import annotations

import numpy as np

from dashflow.errors import DashflowError


def gaussian_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings [N, D] -> mean [D] and covariance [D, D] (float64, ddof 1, like ``np.cov``)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise DashflowError(f"a Fréchet distance needs at least 2 embeddings, got {x.shape[0] if x.ndim else 0}")
    if not np.isfinite(x).all():
        raise DashflowError("embeddings contain NaN or infinite values")
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix [D, D]; negative round-off eigenvalues become 0."""
    sym = (sigma + sigma.T) / 2.0
    values, vectors = np.linalg.eigh(sym)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr (S1 S2)^(1/2)`` for PSD S1, S2 [D, D]."""
    root = psd_sqrt(np.asarray(sigma1, dtype=np.float64))
    middle = root @ np.asarray(sigma2, dtype=np.float64) @ root
    values = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, S1) and N(mu2, S2); float64, clamped at 0 against round-off."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise DashflowError(f"Fréchet distance of mismatched shapes {mu1.shape} and {mu2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return max(float(value), 0.0)


def frechet_distance_of(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to embeddings x [N, D] and y [M, D]."""
    return frechet_distance(*gaussian_statistics(x), *gaussian_statistics(y))
