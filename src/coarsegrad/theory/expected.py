"""Expected coarse gradient E_Z[g_μ] in w for any STE, Gaussian teacher model.

    g_μ = Σ_i (y − y*) v_i μ′(Z_i·w) Z_i       (σ′ replaced by the STE's μ′; Yin et al. 2019)

Write Z_i·w = rU, Z_i·w* = r*U*, U* = ρU + sT (ρ = cos θ, s = sin θ, T ⊥ U standard
normal), ŵ = w/r and e₂ = P⊥w*/‖P⊥w*‖, so Z_i = Uŵ + Te₂ + (parts with mean zero that
are independent of everything else). Rows i ≠ j are independent, hence

    E[g_μ] = [((S² − P) s1 − (SS* − Q) s1*) m₁ + P T₁ − Q C₁] ŵ − Q C₂ e₂,
    m₁ = E[μ′(rU) U],   T₁ = E[σ(rU) μ′(rU) U],
    C₁ = E[σ(r*U*) μ′(rU) U],   C₂ = E[σ(r*U*) μ′(rU) T],

(P = ‖v‖², Q = vᵀv*, S = 1ᵀv, S* = 1ᵀv*, s1 = Eσ(rU), s1* = Eσ(r*U*)). Given U = u,
E[1{U* > g}] = Φ((ρu − g)/s) and E[T 1{U* > g}] = φ((g − ρu)/s).

**Exact** for indicator STEs μ′ = 1{lo < x ≤ hi} (identity (−∞, ∞), ReLU (0, ∞), clipped
ReLU (0, q]); with p = lo/r, p′ = hi/r, h_k = kα/r, g_l = lα/r*:

    m₁ = φ(p) − φ(p′),   T₁ = α Σ_k [φ(max(h_k, p)) − φ(p′)]₊
    C₂ = α Σ_l s φ(g_l) [Φ((p′ − ρg_l)/s) − Φ((p − ρg_l)/s)]
    C₁ = α Σ_l {φ(p)Φ((ρp − g_l)/s) − φ(p′)Φ((ρp′ − g_l)/s)
                + ρ φ(g_l)[Φ((p′ − ρg_l)/s) − Φ((p − ρg_l)/s)]}       (by parts)

For b = 1 and ReLU this is the closed form of Yin et al. 2019 (:mod:`.closed_forms`).
**Monte Carlo** otherwise (e.g. log-tailed ReLU): U is sampled, T is integrated out
analytically (a Rao–Blackwellised estimator), and standard errors are reported.
At θ = π, C₂ = 0, so E[g_μ] ∥ ŵ and is well defined although ∂f/∂w is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from coarsegrad.quant.autograd import staircase
from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.ste import STE, get_ste
from coarsegrad.theory.bivariate import norm_cdf, norm_pdf, safe_ratio
from coarsegrad.theory.population import (
    Teacher,
    _check_r,
    _check_theta,
    _levels,
    _sums,
    _vector,
    plane_frame,
    sigma_moments,
    sin_cos,
)
from coarsegrad.validate import integer


@dataclass(frozen=True)
class CoarseExpectation:
    """E[g_μ] = radial·ŵ + angular·e₂; standard errors are 0 when ``method == 'exact'``.

    ``covariance`` is the covariance of the two Monte Carlo means (same samples).
    """

    radial: float
    angular: float
    radial_se: float = 0.0
    angular_se: float = 0.0
    covariance: float = 0.0
    method: str = "exact"
    samples: int = 0


def indicator_interval(ste: STE | str, q: float | ActQuant) -> tuple[float, float] | None:
    """(lo, hi) with μ′ = 1{lo < x ≤ hi}, read from the STE's piecewise description
    (:meth:`STE.interval`; q = q_max, or a spec's), else None (e.g. log-tailed, custom)."""
    return get_ste(ste).interval(q.q_max if isinstance(q, ActQuant) else q)


def _phi_at(p: float) -> float:
    return 0.0 if math.isinf(p) else float(norm_pdf(p))


def _exact_terms(bits: int, alpha: float, r: float, r_star: float, theta: float,
                 lo: float, hi: float) -> tuple[float, float, float, float]:
    """(m₁, T₁, C₁, C₂) for μ′ = 1{lo < x ≤ hi}, in closed form."""
    p, pp = lo / r, hi / r
    s, rho = sin_cos(theta)
    _, h = _levels(bits, alpha, r)
    _, g = _levels(bits, alpha, r_star)
    m1 = _phi_at(p) - _phi_at(pp)
    start = np.maximum(h, p)
    t1 = alpha * float(np.where(start < pp, norm_pdf(start) - _phi_at(pp), 0.0).sum())
    upper = 1.0 if pp == math.inf else norm_cdf(safe_ratio(pp - rho * g, s))
    lower = 0.0 if p == -math.inf else norm_cdf(safe_ratio(p - rho * g, s))
    mass = upper - lower
    c2 = alpha * float((s * norm_pdf(g) * mass).sum())
    edge_lo = 0.0 if math.isinf(p) else _phi_at(p) * norm_cdf(safe_ratio(rho * p - g, s))
    edge_hi = 0.0 if math.isinf(pp) else _phi_at(pp) * norm_cdf(safe_ratio(rho * pp - g, s))
    c1 = alpha * float((edge_lo - edge_hi + rho * norm_pdf(g) * mass).sum())
    return m1, t1, c1, c2


def _coefficients(v: NDArray, r: float, teacher: Teacher) -> tuple[float, float, float]:
    """(coefficient of m₁, P, Q) in the radial part."""
    P, Q, S, Ss, _ = _sums(v, teacher)
    s1 = sigma_moments(teacher.bits, teacher.alpha, r)[0]
    t1 = sigma_moments(teacher.bits, teacher.alpha, teacher.r_star)[0]
    return (S * S - P) * s1 - (S * Ss - Q) * t1, P, Q


def expected_coarse_grad_at(v: ArrayLike, r: float, theta: float, teacher: Teacher, ste: STE | str, *,
                            samples: int = 1 << 18, generator: torch.Generator | None = None) -> CoarseExpectation:
    """E[g_μ] in the plane frame: exact for indicator STEs, else Monte Carlo.

    Monte Carlo draws ``samples`` values of U from ``generator`` (a fresh
    ``torch.Generator`` seeded with 0 if None, so results are reproducible).
    """
    v = _vector("v", v)
    theta, r = _check_theta(theta), _check_r(r)
    ste = get_ste(ste)
    bits, alpha, r_star = teacher.bits, teacher.alpha, teacher.r_star
    a, P, Q = _coefficients(v, r, teacher)
    interval = indicator_interval(ste, teacher.quant)
    if interval is not None:
        m1, t1, c1, c2 = _exact_terms(bits, alpha, r, r_star, theta, *interval)
        return CoarseExpectation(a * m1 + P * t1 - Q * c1, -Q * c2)
    integer("samples", samples, lo=2)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    u = torch.randn(samples, generator=gen, dtype=torch.float64)
    x = r * u
    dmu = ste.derivative(x, teacher.quant.q_max).to(torch.float64)
    sig = staircase(x, teacher.quant)
    un = u.numpy()[:, None]
    s, rho = sin_cos(theta)
    _, g = _levels(bits, alpha, r_star)
    s1_cond = alpha * norm_cdf(safe_ratio(rho * un - g, s)).sum(1)
    s2_cond = alpha * norm_pdf(safe_ratio(g - rho * un, s)).sum(1)
    dmu_n, sig_n, u1 = dmu.numpy(), sig.numpy(), u.numpy()
    radial = dmu_n * u1 * (a + P * sig_n - Q * s1_cond)
    angular = -Q * dmu_n * s2_cond
    cov = np.cov(radial, angular, ddof=1) / samples
    return CoarseExpectation(float(radial.mean()), float(angular.mean()), math.sqrt(cov[0, 0]),
                             math.sqrt(cov[1, 1]), float(cov[0, 1]), "monte_carlo", samples)


def expected_coarse_grad(v: ArrayLike, w: ArrayLike, teacher: Teacher, ste: STE | str, *, samples: int = 1 << 18,
                         generator: torch.Generator | None = None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(E[g_μ] ∈ R^n, its standard error ∈ R^n) at w (zeros for the exact case)."""
    frame = plane_frame(w, teacher.w_star)
    e = expected_coarse_grad_at(v, frame.r, frame.theta, teacher, ste, samples=samples,
                                generator=generator)
    grad = e.radial * frame.w_hat
    var = (e.radial_se * frame.w_hat) ** 2
    if frame.e2 is not None:
        grad = grad + e.angular * frame.e2
        var = var + (e.angular_se * frame.e2) ** 2 + 2 * e.covariance * frame.w_hat * frame.e2
    return grad, np.sqrt(np.maximum(var, 0.0))
