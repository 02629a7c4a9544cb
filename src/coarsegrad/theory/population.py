"""Exact population loss and gradient of the Gaussian teacher model, any bits and alpha.

Model (Yin et al., ICLR 2019, arXiv 1903.05662, generalised to b bits):

    y = vᵀσ(Zw),  y* = v*ᵀσ(Zw*),  Z ∈ R^{m×n} with i.i.d. N(0, 1) entries,
    f(v, w) = ½ E_Z[(y − y*)²],   σ(x) = α Σ_{k=0}^{L−1} 1{x > kα},  L = 2^b − 1.

Row i gives (Z_i·w, Z_i·w*) = (r U, r* U*) with U, U* standard normal, corr(U, U*) =
ρ = cos θ, r = ‖w‖, r* = ‖w*‖, θ = angle(w, w*); rows are independent. With
h_k = kα/r, g_l = lα/r*, P = ‖v‖², Q = vᵀv*, S = 1ᵀv, S* = 1ᵀv*:

    s1(r) = E σ(rU)     = α Σ_k Φ̄(h_k)
    s2(r) = E σ(rU)²    = α² Σ_k (2k + 1) Φ̄(h_k)
    c(r, θ) = E σ(rU)σ(r*U*) = α² Σ_{k,l} L(h_k, g_l; cos θ)     (L = upper orthant)
    f = ½[P s2 + (S² − P) s1² − 2(Q c + (SS* − Q) s1 s1*) + P* s2* + (S*² − P*) s1*²]
    ∂f/∂v = (s2 − s1²) v + s1² S 1 − (c − s1 s1*) v* − s1 s1* S* 1
    ∂f/∂w = (∂f/∂r) ŵ + (sin θ / r)(∂f/∂ρ) e₂,   e₂ = P⊥w*/‖P⊥w*‖,  ∂f/∂ρ = −Q ∂c/∂ρ
    ∂f/∂r = ½ P s2′ + (S² − P) s1 s1′ − Q ∂c/∂r − (SS* − Q) s1′ s1*
    s1′ = α Σ_k φ(h_k) h_k / r,  s2′ = α² Σ_k (2k + 1) φ(h_k) h_k / r
    ∂c/∂r = α² Σ_{k,l} φ(h_k) Φ((ρh_k − g_l)/sin θ) h_k / r,   ∂c/∂ρ = α² Σ_{k,l} φ2(h_k, g_l; ρ)

For b = 1, α = 1 these reduce to the closed forms of Yin et al. (see
:mod:`coarsegrad.theory.closed_forms`). f is not differentiable at θ = 0 or θ = π (θ(w)
has a cone singularity there); the ``*_at`` functions return the one-sided limit
θ → π⁻ within a fixed plane, which is what the angle diagnostics use.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from coarsegrad.errors import ConfigError
from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.staircase import Rounding
from coarsegrad.theory.bivariate import bvn_density_times_s, bvn_upper, norm_cdf, norm_pdf, safe_ratio
from coarsegrad.validate import number

Array = NDArray[np.float64]


THEORY_ROUNDING: Rounding = "ceil"
"""The theory lab's staircase: the authors' ceil (thresholds kα), which the closed forms
assume and its studies (landscape, geometry, repelled) train with, so their records stay
what they were when ceil was the library default; ``nearest`` is not studied here yet."""


def _vector(name: str, value: ArrayLike) -> Array:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ConfigError(name, f"must be a non-empty finite 1-D vector, got shape {arr.shape}")
    return arr


@dataclass(frozen=True, eq=False)
class Teacher:
    """The teacher y* = v*ᵀσ(Zw*) and the shared activation σ (bits, alpha; the ceil
    staircase of the closed forms), as a spec in :attr:`quant`."""

    v_star: Array
    w_star: Array
    bits: int = 1
    alpha: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "v_star", _vector("v_star", self.v_star))
        object.__setattr__(self, "w_star", _vector("w_star", self.w_star))
        object.__setattr__(self, "alpha", self.quant.alpha)  # validates bits and alpha
        if not np.linalg.norm(self.w_star) > 0:
            raise ConfigError("w_star", "must be non-zero")

    @functools.cached_property
    def quant(self) -> ActQuant:
        """σ's spec (ceil rounding, pinned: the closed forms use thresholds kα; the STE is
        chosen per call)."""
        return ActQuant(self.bits, self.alpha, rounding=THEORY_ROUNDING)

    @property
    def r_star(self) -> float:
        return float(np.linalg.norm(self.w_star))

    @property
    def m(self) -> int:
        return int(self.v_star.size)

    @property
    def n(self) -> int:
        return int(self.w_star.size)


@dataclass(frozen=True)
class PlaneFrame:
    """w in the plane of (w, w*): r = ‖w‖, θ = angle(w, w*), ŵ = w/r, e₂ = P⊥w*/‖P⊥w*‖.

    ``e2`` is None when θ ∈ {0, π} (w parallel to w*).
    """

    r: float
    theta: float
    w_hat: Array
    e2: Array | None


def plane_frame(w: ArrayLike, w_star: ArrayLike) -> PlaneFrame:
    """θ = atan2(‖P⊥ŵ*‖, ŵ·ŵ*) (accurate near 0 and π), with the frame vectors."""
    w, w_star = _vector("w", w), _vector("w_star", w_star)
    if w.shape != w_star.shape:
        raise ConfigError("w", f"has shape {w.shape}, w_star has {w_star.shape}")
    r = float(np.linalg.norm(w))
    if not r > 0:
        raise ConfigError("w", "must be non-zero")
    w_hat = w / r
    ws_hat = w_star / np.linalg.norm(w_star)
    cos = float(w_hat @ ws_hat)
    perp = ws_hat - cos * w_hat
    sin = float(np.linalg.norm(perp))
    theta = math.atan2(sin, cos)
    return PlaneFrame(r, theta, w_hat, perp / sin if sin > 1e-15 else None)


def _levels(bits: int, alpha: float, r: float) -> tuple[Array, Array]:
    """(k, h_k = kα/r) for k = 0..L−1."""
    k = np.arange(ActQuant(bits, alpha).levels, dtype=np.float64)
    return k, k * alpha / r


def sigma_moments(bits: int, alpha: float, r: float) -> tuple[float, float, float, float]:
    """(s1, s2, ds1/dr, ds2/dr) for σ(rU), U ~ N(0, 1) (formulas in the module docstring)."""
    k, h = _levels(bits, alpha, r)
    tail = norm_cdf(-h)
    dens = norm_pdf(h) * h / r
    return (float(alpha * tail.sum()), float(alpha**2 * ((2 * k + 1) * tail).sum()),
            float(alpha * dens.sum()), float(alpha**2 * ((2 * k + 1) * dens).sum()))


def cross_moment(bits: int, alpha: float, r: float, r_star: float, theta: float) -> float:
    """c = E[σ(rU)σ(r*U*)] = α² Σ_{k,l} L(kα/r, lα/r*; cos θ), exact (bivariate orthants)."""
    _, h = _levels(bits, alpha, r)
    _, g = _levels(bits, alpha, r_star)
    return float(alpha**2 * bvn_upper(h[:, None], g[None, :], sin_cos(theta)[1]).sum())


def cross_moment_derivs(bits: int, alpha: float, r: float, r_star: float, theta: float
                        ) -> tuple[float, float]:
    """(∂c/∂r, sin θ·∂c/∂ρ): the second stays finite as θ → 0 or π."""
    _, h = _levels(bits, alpha, r)
    _, g = _levels(bits, alpha, r_star)
    s, rho = sin_cos(theta)
    hh, gg = h[:, None], g[None, :]
    dc_dr = norm_pdf(hh) * norm_cdf(safe_ratio(rho * hh - gg, s)) * hh / r
    s_dc_drho = bvn_density_times_s(hh, gg, rho, s)
    return float(alpha**2 * dc_dr.sum()), float(alpha**2 * s_dc_drho.sum())


def sin_cos(theta: float) -> tuple[float, float]:
    """(sin θ, cos θ), exactly (0, ±1) at θ = 0 and θ = π (where the formulas take limits)."""
    if theta == math.pi:
        return 0.0, -1.0
    if theta == 0.0:
        return 0.0, 1.0
    return math.sin(theta), math.cos(theta)


def _check_theta(theta: float) -> float:
    if not (isinstance(theta, (int, float)) and 0.0 <= theta <= math.pi):
        raise ConfigError("theta", f"must be in [0, π], got {theta!r}")
    return float(theta)


def _check_r(r: float) -> float:
    return number("r", r, lo=0.0, lo_open=True)


def _sums(v: Array, teacher: Teacher) -> tuple[float, float, float, float, float]:
    if v.shape != teacher.v_star.shape:
        raise ConfigError("v", f"has shape {v.shape}, v_star has {teacher.v_star.shape}")
    vs = teacher.v_star
    return float(v @ v), float(v @ vs), float(v.sum()), float(vs.sum()), float(vs @ vs)


def _prepare(v: ArrayLike, r: float, theta: float, teacher: Teacher) -> tuple[
        Array, float, float, tuple[float, float, float, float, float], tuple[float, float, float, float],
        tuple[float, float, float, float]]:
    """Checked (v, r, θ), the sums of :func:`_sums`, and the σ moments at ‖w‖ = r and at ‖w*‖."""
    v = _vector("v", v)
    theta, r = _check_theta(theta), _check_r(r)
    sums = _sums(v, teacher)
    return (v, r, theta, sums, sigma_moments(teacher.bits, teacher.alpha, r),
            sigma_moments(teacher.bits, teacher.alpha, teacher.r_star))


def population_loss_at(v: ArrayLike, r: float, theta: float, teacher: Teacher) -> float:
    """f(v, w) for ‖w‖ = r and angle(w, w*) = θ (module docstring formula)."""
    v, r, theta, (P, Q, S, Ss, Ps), (s1, s2, _, _), (t1, t2, _, _) = _prepare(v, r, theta, teacher)
    c = cross_moment(teacher.bits, teacher.alpha, r, teacher.r_star, theta)
    return 0.5 * (P * s2 + (S * S - P) * s1 * s1 - 2.0 * (Q * c + (S * Ss - Q) * s1 * t1)
                  + Ps * t2 + (Ss * Ss - Ps) * t1 * t1)


def population_grad_v_at(v: ArrayLike, r: float, theta: float, teacher: Teacher) -> Array:
    """∂f/∂v = (s2 − s1²)v + s1²(1ᵀv)1 − (c − s1s1*)v* − s1s1*(1ᵀv*)1."""
    v, r, theta, _, (s1, s2, _, _), (t1, _, _, _) = _prepare(v, r, theta, teacher)
    c = cross_moment(teacher.bits, teacher.alpha, r, teacher.r_star, theta)
    vs = teacher.v_star
    return (s2 - s1 * s1) * v + s1 * s1 * v.sum() - (c - s1 * t1) * vs - s1 * t1 * vs.sum()


def population_grad_w_at(v: ArrayLike, r: float, theta: float, teacher: Teacher) -> tuple[float, float]:
    """(radial, angular) with ∂f/∂w = radial·ŵ + angular·e₂ (module docstring).

    At θ = 0 or π the pair is the one-sided limit within a plane (f is not
    differentiable there; the angular part has a limit of fixed size, any direction ⊥ w).
    """
    v, r, theta, (P, Q, S, Ss, _), (s1, _, ds1, ds2), (t1, _, _, _) = _prepare(v, r, theta, teacher)
    dc_dr, s_dc_drho = cross_moment_derivs(teacher.bits, teacher.alpha, r, teacher.r_star, theta)
    radial = 0.5 * P * ds2 + (S * S - P) * s1 * ds1 - Q * dc_dr - (S * Ss - Q) * ds1 * t1
    angular = -Q * s_dc_drho / r
    return float(radial), float(angular)


def population_loss(v: ArrayLike, w: ArrayLike, teacher: Teacher) -> float:
    """f(v, w) = ½ E_Z[(vᵀσ(Zw) − v*ᵀσ(Zw*))²], exact."""
    frame = plane_frame(w, teacher.w_star)
    return population_loss_at(v, frame.r, frame.theta, teacher)


def population_grad_v(v: ArrayLike, w: ArrayLike, teacher: Teacher) -> Array:
    """∂f/∂v, exact."""
    frame = plane_frame(w, teacher.w_star)
    return population_grad_v_at(v, frame.r, frame.theta, teacher)


def population_grad_w(v: ArrayLike, w: ArrayLike, teacher: Teacher) -> Array:
    """∂f/∂w ∈ R^n, exact; raises ``ConfigError('w')`` where w ∥ w* (not differentiable)."""
    frame = plane_frame(w, teacher.w_star)
    radial, angular = population_grad_w_at(v, frame.r, frame.theta, teacher)
    if frame.e2 is None:
        if angular != 0.0:
            raise ConfigError("w", "f is not differentiable where w is parallel to w* "
                                   "(θ = 0 or π); use population_grad_w_at for the limit")
        return radial * frame.w_hat
    return radial * frame.w_hat + angular * frame.e2


def optimal_v_at(r: float, theta: float, teacher: Teacher) -> Array:
    """argmin_v f(v, w) = A⁻¹B v* with A = (s2 − s1²)I + s1²11ᵀ, B = (c − s1s1*)I + s1s1*11ᵀ.

    For b = 1, α = 1, θ = π this is Yin et al.'s spurious minimiser (I + 11ᵀ)⁻¹(11ᵀ − I)v*.
    """
    theta, r = _check_theta(theta), _check_r(r)
    b, a, rs, m = teacher.bits, teacher.alpha, teacher.r_star, teacher.m
    s1, s2, _, _ = sigma_moments(b, a, r)
    t1, _, _, _ = sigma_moments(b, a, rs)
    c = cross_moment(b, a, r, rs, theta)
    ones = np.ones((m, m))
    A = (s2 - s1 * s1) * np.eye(m) + s1 * s1 * ones
    B = (c - s1 * t1) * np.eye(m) + s1 * t1 * ones
    return np.asarray(np.linalg.solve(A, B @ teacher.v_star), dtype=np.float64)
