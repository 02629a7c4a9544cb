"""Bivariate normal functions against independent oracles: SciPy (mvn CDF, quad), Sheppard, FD."""

import math

import numpy as np
import pytest

from coarsegrad.theory.bivariate import (
    bvn_cdf,
    bvn_density,
    bvn_density_times_s,
    bvn_upper,
    bvn_upper_dh,
    norm_cdf,
    norm_pdf,
    safe_ratio,
)

scipy = pytest.importorskip("scipy")
from scipy import integrate, special, stats  # noqa: E402

mpmath = pytest.importorskip("mpmath")  # installed with torch (via sympy)
mpmath.mp.dps = 20

RHOS = [-1.0, -0.9999999, -0.999, -0.95, -0.925, -0.924, -0.75, -0.3, 0.0, 0.2999, 0.5,
        0.7501, 0.93, 0.99, 0.9999999, 1.0]
LIMITS = [-4.0, -1.3, 0.0, 1e-3, 0.7, 2.5, 5.0]


def _quad_cdf(h, k, rho):
    """Φ2(h, k; ρ) = ∫_{-∞}^h φ(x) Φ((k − ρx)/s) dx by SciPy quad, or the degenerate closed forms."""
    if rho == 1.0:
        return special.ndtr(min(h, k))
    if rho == -1.0:
        return max(0.0, special.ndtr(h) + special.ndtr(k) - 1.0)
    s = math.sqrt((1 - rho) * (1 + rho))
    f = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi) * special.ndtr((k - rho * x) / s)  # noqa: E731
    return integrate.quad(f, -np.inf, h, epsabs=1e-15, epsrel=1e-13, limit=400)[0]


def _mp_cdf(h, k, rho):
    """The same integral in 20-digit arithmetic (mpmath), split around the kink x = k/ρ."""
    rho = mpmath.mpf(rho)
    s = mpmath.sqrt(1 - rho**2)
    kink = k / rho
    pts = [-mpmath.inf, *[p for p in sorted([kink - 20 * s, kink, kink + 20 * s]) if p < h], h]
    return float(mpmath.quad(lambda x: mpmath.npdf(x) * mpmath.ncdf((k - rho * x) / s), pts))


@pytest.mark.parametrize("rho", [r for r in RHOS if abs(r) <= 0.99 or abs(r) == 1.0])
def test_cdf_matches_numerical_integration(rho):
    got = bvn_cdf(np.array(LIMITS)[:, None], np.array(LIMITS)[None, :], rho)
    want = np.array([[_quad_cdf(h, k, rho) for k in LIMITS] for h in LIMITS])
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-13)


@pytest.mark.parametrize("rho", [-0.9999999, -0.999, 0.999, 0.9999999])
def test_cdf_near_degenerate_matches_high_precision(rho):
    limits = [-1.3, 0.0, 0.7, 2.5]
    got = bvn_cdf(np.array(limits)[:, None], np.array(limits)[None, :], rho)
    want = np.array([[_mp_cdf(h, k, rho) for k in limits] for h in limits])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def test_cdf_matches_scipy_multivariate_normal():
    rng = np.random.default_rng(7)
    for _ in range(60):
        h, k = rng.uniform(-3, 3, size=2)
        rho = float(rng.uniform(-0.999, 0.999))
        ref = stats.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([h, k])
        assert abs(bvn_cdf(h, k, rho) - ref) < 1e-9  # SciPy's own default tolerance is the limit


def test_sheppard_and_product_identities():
    rho = np.linspace(-1, 1, 41)
    np.testing.assert_allclose(bvn_upper(0.0, 0.0, rho), 0.25 + np.arcsin(rho) / (2 * math.pi),
                               rtol=0, atol=1e-15)
    h, k = np.meshgrid(LIMITS, LIMITS)
    np.testing.assert_allclose(bvn_upper(h, k, 0.0), norm_cdf(-h) * norm_cdf(-k), rtol=0, atol=1e-16)
    np.testing.assert_allclose(bvn_upper(h, k, 0.6), bvn_upper(k, h, 0.6), rtol=0, atol=1e-16)
    # Upper orthant = 1 − Φ(h) − Φ(k) + Φ2(h, k): a consistency check between both entry points.
    np.testing.assert_allclose(bvn_upper(h, k, -0.97),
                               1 - norm_cdf(h) - norm_cdf(k) + bvn_cdf(h, k, -0.97), atol=1e-15)


def test_infinite_limits():
    assert bvn_upper(np.inf, 0.3, 0.5) == 0.0
    assert bvn_upper(-np.inf, -np.inf, -0.2) == 1.0
    assert bvn_upper(-np.inf, 0.3, 0.5) == pytest.approx(float(norm_cdf(-0.3)), abs=1e-16)
    assert bvn_upper(1.1, -np.inf, 0.99) == pytest.approx(float(norm_cdf(-1.1)), abs=1e-16)


def test_bad_rho_raises():
    with pytest.raises(ValueError):
        bvn_upper(0.0, 0.0, 1.5)


@pytest.mark.parametrize("rho", [-0.99, -0.4, 0.0, 0.6, 0.97])
def test_derivatives_match_finite_differences(rho):
    eps = 1e-6
    for h, k in [(0.0, 0.0), (0.4, -1.2), (-2.0, 0.7), (1.5, 1.5)]:
        fd_h = (bvn_upper(h + eps, k, rho) - bvn_upper(h - eps, k, rho)) / (2 * eps)
        assert bvn_upper_dh(h, k, rho) == pytest.approx(float(fd_h), abs=1e-9)
        fd_r = (bvn_upper(h, k, rho + eps) - bvn_upper(h, k, rho - eps)) / (2 * eps)
        assert bvn_density(h, k, rho) == pytest.approx(float(fd_r), rel=1e-6, abs=1e-8)
        ref = stats.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).pdf([h, k])
        assert bvn_density(h, k, rho) == pytest.approx(ref, rel=1e-12)


def test_degenerate_limits_of_derivatives():
    # s·φ2 at ρ = −1 (s = 0): 1/(2π) only where both limits are 0, else 0.
    assert bvn_density_times_s(0.0, 0.0, -1.0, 0.0) == pytest.approx(1 / (2 * math.pi))
    assert bvn_density_times_s(0.5, 0.0, -1.0, 0.0) == 0.0
    # Φ((ρh − k)/s) at s = 0 with a zero numerator is the one-sided limit ½.
    assert bvn_upper_dh(0.0, 0.0, 1.0) == pytest.approx(-float(norm_pdf(0.0)) * 0.5)
    np.testing.assert_array_equal(safe_ratio([1.0, -2.0, 0.0], 0.0), [np.inf, -np.inf, 0.0])


def test_norm_functions_in_the_tails():
    x = np.array([-38.0, -10.0, 0.0, 10.0])
    np.testing.assert_allclose(norm_cdf(x), special.ndtr(x), rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(norm_pdf(x), stats.norm.pdf(x), rtol=1e-14, atol=0)
