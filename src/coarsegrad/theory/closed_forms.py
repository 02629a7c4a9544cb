"""Closed forms of Yin et al., ICLR 2019 (arXiv 1903.05662), binary σ(x) = 1{x > 0}.

With θ = angle(w, w*), 1 the all-ones vector, f = ½ E_Z[(vᵀσ(Zw) − v*ᵀσ(Zw*))²]:

    f     = ⅛[vᵀ(I + 11ᵀ)v − 2vᵀ((1 − 2θ/π)I + 11ᵀ)v* + v*ᵀ(I + 11ᵀ)v*]
    ∂f/∂v = ¼(I + 11ᵀ)v − ¼((1 − 2θ/π)I + 11ᵀ)v*
    ∂f/∂w = −(vᵀv*)/(2π‖w‖) · P⊥w*/‖P⊥w*‖,   P⊥ = I − wwᵀ/‖w‖²      (θ ∈ (0, π))

Expected coarse gradients in w (the paper's lemma for the ReLU STE; identity by Stein's
lemma, E[1{Z·w > 0} Z] = ŵ/√(2π), the cross terms i ≠ j vanish since E Z_i = 0):

    E[g_relu] = h(v, v*)/(2√(2π)) · ŵ − cos(θ/2)·vᵀv*/√(2π) · (ŵ + ŵ*)/‖ŵ + ŵ*‖,
                h(v, v*) = ‖v‖² + (1ᵀv)² − (1ᵀv)(1ᵀv*) + vᵀv*
    E[g_id]   = (‖v‖² ŵ − vᵀv* ŵ*)/√(2π)

These are independent oracles for the general b-bit code in :mod:`.population` and
:mod:`.expected`; they use nothing from it.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _angle(w: NDArray, w_star: NDArray) -> float:
    cos = float(w @ w_star / (np.linalg.norm(w) * np.linalg.norm(w_star)))
    return math.acos(max(-1.0, min(1.0, cos)))


def binary_loss(v: ArrayLike, w: ArrayLike, v_star: ArrayLike, w_star: ArrayLike) -> float:
    """f(v, w) for σ = 1{x > 0} (Yin et al. 2019)."""
    v, w, vs, ws = (np.asarray(a, dtype=np.float64) for a in (v, w, v_star, w_star))
    m = v.size
    theta = _angle(w, ws)
    I, J = np.eye(m), np.ones((m, m))
    return float(v @ (I + J) @ v - 2 * v @ ((1 - 2 * theta / math.pi) * I + J) @ vs
                 + vs @ (I + J) @ vs) / 8.0


def binary_grad_v(v: ArrayLike, w: ArrayLike, v_star: ArrayLike, w_star: ArrayLike) -> NDArray:
    """∂f/∂v for σ = 1{x > 0}."""
    v, w, vs, ws = (np.asarray(a, dtype=np.float64) for a in (v, w, v_star, w_star))
    m = v.size
    theta = _angle(w, ws)
    I, J = np.eye(m), np.ones((m, m))
    return 0.25 * (I + J) @ v - 0.25 * ((1 - 2 * theta / math.pi) * I + J) @ vs


def binary_grad_w(v: ArrayLike, w: ArrayLike, v_star: ArrayLike, w_star: ArrayLike) -> NDArray:
    """∂f/∂w = −(vᵀv*)/(2π‖w‖)·P⊥w*/‖P⊥w*‖ for σ = 1{x > 0}, θ ∈ (0, π)."""
    v, w, vs, ws = (np.asarray(a, dtype=np.float64) for a in (v, w, v_star, w_star))
    r = np.linalg.norm(w)
    perp = ws - (w @ ws) / (r * r) * w
    return -(v @ vs) / (2 * math.pi * r) * perp / np.linalg.norm(perp)


def binary_expected_relu(v: ArrayLike, w: ArrayLike, v_star: ArrayLike, w_star: ArrayLike) -> NDArray:
    """E_Z[g_relu] for σ = 1{x > 0} (Yin et al. 2019, ReLU-STE lemma)."""
    v, w, vs, ws = (np.asarray(a, dtype=np.float64) for a in (v, w, v_star, w_star))
    w_hat, ws_hat = w / np.linalg.norm(w), ws / np.linalg.norm(ws)
    theta = _angle(w, ws)
    h = v @ v + v.sum() ** 2 - v.sum() * vs.sum() + v @ vs
    bisector = w_hat + ws_hat
    c = math.sqrt(2 * math.pi)
    return h / (2 * c) * w_hat - math.cos(theta / 2) * (v @ vs) / c * bisector / np.linalg.norm(bisector)


def binary_expected_identity(v: ArrayLike, w: ArrayLike, v_star: ArrayLike, w_star: ArrayLike) -> NDArray:
    """E_Z[g_id] = (‖v‖²ŵ − vᵀv*ŵ*)/√(2π) for σ = 1{x > 0}."""
    v, w, vs, ws = (np.asarray(a, dtype=np.float64) for a in (v, w, v_star, w_star))
    w_hat, ws_hat = w / np.linalg.norm(w), ws / np.linalg.norm(ws)
    return ((v @ v) * w_hat - (v @ vs) * ws_hat) / math.sqrt(2 * math.pi)


def binary_spurious_v(v_star: ArrayLike) -> NDArray:
    """v = (I + 11ᵀ)⁻¹(11ᵀ − I)v*, the second layer at Yin et al.'s spurious minimisers (θ = π)."""
    vs = np.asarray(v_star, dtype=np.float64)
    m = vs.size
    I, J = np.eye(m), np.ones((m, m))
    return np.linalg.solve(I + J, (J - I) @ vs)
