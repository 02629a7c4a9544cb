"""Univariate and bivariate standard normal functions, vectorised NumPy, float64.

    φ(x) = e^{−x²/2}/√(2π),  Φ(x) = ½ erfc(−x/√2),  Φ̄(x) = 1 − Φ(x) = Φ(−x)
    L(h, k; ρ) = P(X > h, Y > k),  (X, Y) standard bivariate normal with correlation ρ
    Φ2(h, k; ρ) = P(X ≤ h, Y ≤ k) = L(−h, −k; ρ)

Derivatives (closed forms used by the exact population gradients):

    ∂L/∂h = −φ(h) Φ((ρh − k)/s),   s = √(1 − ρ²)
    ∂L/∂ρ = φ2(h, k; ρ) = exp(−(h² − 2ρhk + k²)/(2s²)) / (2π s)

L is computed by the Drezner–Wesolowsky (1989) Gauss–Legendre algorithm with Genz's
double-precision modifications for |ρ| close to 1 (Genz, "Numerical computation of
rectangular bivariate and trivariate normal and t probabilities", Statistics and
Computing 14, 2004); absolute error about 1e-15. Written from the published algorithm,
vectorised over arrays; no SciPy needed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

_TWO_PI = 2.0 * math.pi
_SQRT_TWO_PI = math.sqrt(_TWO_PI)
_X20, _W20 = np.polynomial.legendre.leggauss(20)
_NODES = 1.0 + _X20  # 20-point Gauss–Legendre nodes on [0, 2]; weights _W20 sum to 2


def _erfc(x: NDArray[np.float64]) -> NDArray[np.float64]:
    flat = np.ascontiguousarray(x).reshape(-1)  # ascontiguousarray makes 0-d arrays 1-d
    return torch.special.erfc(torch.from_numpy(flat)).numpy().reshape(np.shape(x))


def norm_pdf(x: ArrayLike) -> NDArray[np.float64]:
    """φ(x) = exp(−x²/2)/√(2π); φ(±∞) = 0."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-0.5 * x * x) / _SQRT_TWO_PI


def norm_cdf(x: ArrayLike) -> NDArray[np.float64]:
    """Φ(x) = ½·erfc(−x/√2), accurate in both tails (relative error ~1e-16)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * _erfc(-x / math.sqrt(2.0))


def safe_ratio(num: ArrayLike, den: ArrayLike) -> NDArray[np.float64]:
    """num/den with the limits used at s = sin θ → 0: ±∞ for num ≠ 0 and 0 for num = 0.

    A numerator that is exactly zero stays zero along the limit, so Φ(0/0) := Φ(0) = ½
    is the right one-sided limit in the formulas of this package.
    """
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    out = np.zeros(num.shape)
    nz = den != 0
    out[nz] = num[nz] / den[nz]
    z = ~nz & (num != 0)
    out[z] = np.sign(num[z]) * np.inf
    return out


def bvn_upper(h: ArrayLike, k: ArrayLike, rho: ArrayLike) -> NDArray[np.float64]:
    """L(h, k; ρ) = P(X > h, Y > k) for a standard bivariate normal with correlation ρ.

    Broadcasts its arguments; h, k may be ±∞; ρ ∈ [−1, 1] (ρ = ±1 exact, degenerate).
    Drezner–Wesolowsky / Genz: for |ρ| < 0.925, L = Φ(−h)Φ(−k) + (1/2π)∫_0^{asin ρ}
    exp(−(h² − 2hk sin t + k²)/(2cos² t)) dt by 20-point Gauss–Legendre; otherwise
    Genz's expansion about |ρ| = 1 plus a Gauss–Legendre correction.
    """
    h, k, r = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (h, k, rho)))
    shape = h.shape
    if np.any(np.abs(r) > 1.0) or np.any(np.isnan(r)) or np.any(np.isnan(h)) or np.any(np.isnan(k)):
        raise ValueError("rho must lie in [-1, 1]; h, k must not be NaN")
    h, k, r = h.ravel(), k.ravel(), r.ravel()
    out = np.zeros(h.shape)
    fin = np.isfinite(h) & np.isfinite(k)
    # Infinite limits: L = 0 if h or k = +∞, else the other margin (or 1).
    inf_h, inf_k = ~np.isfinite(h), ~np.isfinite(k)
    out[inf_h & (h < 0)] = norm_cdf(-k[inf_h & (h < 0)])
    out[inf_k & (k < 0)] = norm_cdf(-h[inf_k & (k < 0)])
    out[(h == np.inf) | (k == np.inf)] = 0.0
    out[(h == -np.inf) & (k == -np.inf)] = 1.0

    low = fin & (np.abs(r) < 0.925)
    if low.any():
        hh, kk, rr = h[low], k[low], r[low]
        hk, hs = hh * kk, 0.5 * (hh * hh + kk * kk)
        asr = 0.5 * np.arcsin(rr)
        sn = np.sin(asr[:, None] * _NODES)
        integral = np.exp((sn * hk[:, None] - hs[:, None]) / (1.0 - sn * sn)) @ _W20
        out[low] = integral * asr / _TWO_PI + norm_cdf(-hh) * norm_cdf(-kk)
    high = fin & ~low
    if high.any():
        out[high] = _bvn_upper_high(h[high], k[high], r[high])
    return np.clip(out, 0.0, 1.0).reshape(shape)


def _bvn_upper_high(h: NDArray, k: NDArray, r: NDArray) -> NDArray:
    """Genz's branch for 0.925 ≤ |ρ| ≤ 1 (finite h, k)."""
    k = np.where(r < 0, -k, k)
    hk = h * k
    bvn = np.zeros(h.shape)
    inner = np.abs(r) < 1.0
    if inner.any():
        hi, ki, hki, ri = h[inner], k[inner], hk[inner], r[inner]
        as_ = (1.0 - ri) * (1.0 + ri)
        a = np.sqrt(as_)
        bs = (hi - ki) ** 2
        c = (4.0 - hki) / 8.0
        d = (12.0 - hki) / 80.0
        asr = -(bs / as_ + hki) / 2.0
        val = np.where(asr > -100.0,
                       a * np.exp(np.maximum(asr, -100.0))
                       * (1.0 - c * (bs - as_) * (1.0 - d * bs) / 3.0 + c * d * as_ * as_), 0.0)
        b = np.sqrt(bs)
        sp = _SQRT_TWO_PI * norm_cdf(-b / a)
        tail = np.exp(-np.minimum(hki, 100.0) / 2.0) * sp * b * (1.0 - c * bs * (1.0 - d * bs) / 3.0)
        val = val - np.where(hki > -100.0, tail, 0.0)
        a2 = a / 2.0
        xs = (a2[:, None] * _NODES) ** 2
        asr2 = -(bs[:, None] / xs + hki[:, None]) / 2.0
        ok = asr2 > -100.0
        sp2 = 1.0 + c[:, None] * xs * (1.0 + 5.0 * d[:, None] * xs)
        rs = np.sqrt(1.0 - xs)
        ep = np.exp(-(hki[:, None] / 2.0) * xs / (1.0 + rs) ** 2) / rs
        terms = np.where(ok, np.exp(np.maximum(asr2, -100.0)) * (sp2 - ep), 0.0)
        bvn[inner] = (a2 * (terms @ _W20) - val) / _TWO_PI
    pos = r > 0
    out = np.empty(h.shape)
    out[pos] = bvn[pos] + norm_cdf(-np.maximum(h[pos], k[pos]))
    neg = ~pos
    hn, kn, bn = h[neg], k[neg], bvn[neg]
    gap = np.where(hn < 0, norm_cdf(kn) - norm_cdf(hn), norm_cdf(-hn) - norm_cdf(-kn))
    out[neg] = np.where(hn >= kn, -bn, gap - bn)
    return out


def bvn_cdf(h: ArrayLike, k: ArrayLike, rho: ArrayLike) -> NDArray[np.float64]:
    """Φ2(h, k; ρ) = P(X ≤ h, Y ≤ k) = L(−h, −k; ρ)."""
    return bvn_upper(-np.asarray(h, np.float64), -np.asarray(k, np.float64), rho)


def bvn_upper_dh(h: ArrayLike, k: ArrayLike, rho: ArrayLike) -> NDArray[np.float64]:
    """∂L(h, k; ρ)/∂h = −φ(h)·Φ((ρh − k)/√(1 − ρ²)) (limits at |ρ| = 1 as in :func:`safe_ratio`)."""
    h, k, r = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (h, k, rho)))
    s = np.sqrt((1.0 - r) * (1.0 + r))
    return -norm_pdf(h) * norm_cdf(safe_ratio(r * h - k, s))


def bvn_density_times_s(h: ArrayLike, k: ArrayLike, rho: ArrayLike, s: ArrayLike | None = None
                        ) -> NDArray[np.float64]:
    """s·φ2(h, k; ρ) = exp(−½[((h − ρk)/s)² + k²]) / (2π), s = √(1 − ρ²).

    φ2 = ∂L/∂ρ is the bivariate normal density. Multiplying by s keeps it finite as
    |ρ| → 1 (where dρ/dθ = −sin θ = −s vanishes). Pass ``s`` (= sin θ) to avoid the
    cancellation in 1 − ρ² near |ρ| = 1.
    """
    h, k, r = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (h, k, rho)))
    s = np.sqrt((1.0 - r) * (1.0 + r)) if s is None else np.broadcast_to(np.asarray(s, np.float64), h.shape)
    z = safe_ratio(h - r * k, s)
    return np.exp(-0.5 * (z * z + k * k)) / _TWO_PI


def bvn_density(h: ArrayLike, k: ArrayLike, rho: ArrayLike) -> NDArray[np.float64]:
    """φ2(h, k; ρ) = ∂L/∂ρ = exp(−(h² − 2ρhk + k²)/(2(1 − ρ²))) / (2π√(1 − ρ²)), |ρ| < 1."""
    r = np.asarray(rho, dtype=np.float64)
    s = np.sqrt((1.0 - r) * (1.0 + r))
    return bvn_density_times_s(h, k, r, s) / s
