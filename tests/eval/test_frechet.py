"""Fréchet distance: closed forms, agreement with scipy's sqrtm, rank-deficient covariances."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from dashflow.eval.frechet import (
    frechet_distance,
    frechet_distance_of,
    gaussian_statistics,
    trace_sqrt_product,
)
from dashflow.eval.suite import pooled_frechet

from dashflow.errors import DashflowError


def _random_cov(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or 2 * d))
    return a @ a.T / a.shape[1]


def test_identical_gaussians_give_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(16), _random_cov(rng, 16)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-10)


def test_isotropic_gaussians_closed_form():
    # FD(N(m1, s1^2 I), N(m2, s2^2 I)) = |m1 - m2|^2 + d (s1 - s2)^2
    d, s1, s2 = 32, 0.7, 1.9
    m1, m2 = np.zeros(d), np.full(d, 0.5)
    expected = 0.25 * d + d * (s1 - s2) ** 2
    got = frechet_distance(m1, s1 ** 2 * np.eye(d), m2, s2 ** 2 * np.eye(d))
    assert got == pytest.approx(expected, rel=1e-12)


def test_diagonal_gaussians_closed_form():
    # commuting covariances: Tr (S1 S2)^1/2 = sum sqrt(a_i b_i), so FD = |dmu|^2 + sum (sqrt a - sqrt b)^2
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3.0, 20), rng.uniform(0.1, 3.0, 20)
    dmu = rng.standard_normal(20)
    expected = dmu @ dmu + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(dmu, np.diag(a), np.zeros(20), np.diag(b)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("d", [8, 64, 128])
def test_matches_scipy_sqrtm_on_well_conditioned_covariances(d):
    rng = np.random.default_rng(d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    reference = (m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(reference, rel=1e-6)


def test_rank_deficient_covariances_are_finite_and_correct():
    # 2048-d features from 40 clips (as FD does with few clips): both covariances have rank <= 39
    rng = np.random.default_rng(2)
    d = 256
    x = rng.standard_normal((40, d)) @ rng.standard_normal((d, d)) * 0.1
    y = rng.standard_normal((30, d)) @ rng.standard_normal((d, d)) * 0.1 + 0.05
    (m1, s1), (m2, s2) = gaussian_statistics(x), gaussian_statistics(y)
    assert np.linalg.matrix_rank(s1) < d and np.linalg.matrix_rank(s2) < d
    # independent route: with centred data X, Y, S1 S2 shares its non-zero eigenvalues with
    # (X Y^T)(X Y^T)^T / ((n-1)(m-1)), so Tr (S1 S2)^1/2 = nuclear norm of X Y^T / sqrt((n-1)(m-1))
    xc, yc = x - x.mean(0), y - y.mean(0)
    nuclear = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt(39 * 29)
    assert trace_sqrt_product(s1, s2) == pytest.approx(nuclear, rel=1e-6)
    value = frechet_distance(m1, s1, m2, s2)
    assert np.isfinite(value)
    expected = (m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * nuclear
    assert value == pytest.approx(expected, rel=1e-6)


def test_singular_identical_sets_give_zero():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 64))
    assert frechet_distance_of(x, x) == pytest.approx(0.0, abs=1e-9)


def test_statistics_match_numpy_cov_and_reject_too_few_rows():
    x = np.random.default_rng(4).standard_normal((50, 6))
    mu, sigma = gaussian_statistics(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False))
    with pytest.raises(DashflowError, match="at least 2"):
        gaussian_statistics(x[:1])
    with pytest.raises(DashflowError, match="NaN"):
        gaussian_statistics(np.full((3, 2), np.nan))


def test_fad_pools_every_frame_of_every_clip():
    rng = np.random.default_rng(5)
    gen = {f"g{i}": {"frames": rng.standard_normal((3, 4))} for i in range(5)}
    ref = {f"r{i}": {"frames": rng.standard_normal((2, 4)) + 1.0} for i in range(6)}
    out = pooled_frechet(gen, ref, "frames")
    pooled = frechet_distance_of(np.concatenate([g["frames"] for g in gen.values()]),
                                 np.concatenate([r["frames"] for r in ref.values()]))
    assert out["value"] == pytest.approx(pooled)
    assert (out["n_vectors_generated"], out["n_vectors_reference"]) == (15, 12)
    assert (out["n_generated"], out["n_reference"]) == (5, 6)
