"""How good is each STE's coarse gradient? Angle grid, spurious minimum, trajectories.

For the Gaussian teacher model (:mod:`.population`) and an STE μ, with d = ∂f/∂w (exact)
and g = E_Z[g_μ] (:mod:`.expected`), both in the plane frame (ŵ, e₂):

    inner  = ⟨g, d⟩           (≥ 0: −g is a descent direction for f; Yin et al. 2019)
    cosine = ⟨g, d⟩/(‖g‖‖d‖)

Conventions (all are parameters, recorded in every record): the teacher is w* = r*·e₁,
v* ~ N(0, I_m) from ``numpy.random.default_rng(seed)``; σ has α = optimal_alpha(b)·r*
(the MSE-optimal step for the N(0, r*²) pre-activations); ‖w‖ = r. v is either v*
(``v_mode='teacher'``) or argmin_v f(v, w) (``'optimal'``, which at θ = π is the
spurious minimiser of Yin et al.). At θ = π the numbers are the limit θ → π⁻ in a plane.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike

from coarsegrad.errors import ConfigError
from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.ste import STE, get_ste
from coarsegrad.theory.expected import CoarseExpectation, expected_coarse_grad_at
from coarsegrad.theory.population import (
    Teacher,
    optimal_v_at,
    population_grad_v_at,
    population_grad_w_at,
    population_loss_at,
)

VMode = Literal["teacher", "optimal"]


def make_teacher(m: int, n: int, bits: int, *, seed: int = 0, r_star: float = 1.0,
                 alpha: float | None = None) -> Teacher:
    """Teacher with v* ~ N(0, I_m) (``default_rng(seed)``), w* = r*·e₁, α = optimal_alpha(b)·r* by default."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ConfigError("m", f"must be an integer >= 1, got {m!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError("n", f"must be an integer >= 2, got {n!r}")
    v_star = np.random.default_rng(seed).standard_normal(m)
    w_star = np.zeros(n)
    w_star[0] = r_star
    a = ActQuant(bits).alpha * r_star if alpha is None else alpha
    return Teacher(v_star, w_star, bits, a)


def compare(grad: tuple[float, float], coarse: CoarseExpectation, zero: float = 0.0) -> dict[str, float]:
    """inner, cosine, norms, and delta-method standard errors for Monte Carlo g.

    A vector with norm ≤ ``zero`` (rounding level) has no direction: its cosine is NaN.
    """
    d = np.array(grad)
    g = np.array([coarse.radial, coarse.angular])
    cov = np.array([[coarse.radial_se**2, coarse.covariance],
                    [coarse.covariance, coarse.angular_se**2]])
    inner = float(g @ d)
    gn, dn = float(np.linalg.norm(g)), float(np.linalg.norm(d))
    defined = gn > zero and dn > zero
    cosine = inner / (gn * dn) if defined else math.nan
    jac = d / (gn * dn) - cosine * g / gn**2 if defined else np.zeros(2)
    return {"inner": inner, "inner_se": float(math.sqrt(max(d @ cov @ d, 0.0))),
            "cosine": cosine, "cosine_se": float(math.sqrt(max(jac @ cov @ jac, 0.0))),
            "coarse_norm": gn, "grad_w_norm": dn}


def point_record(v: ArrayLike, r: float, theta: float, teacher: Teacher, ste: STE | str, *,
                 samples: int = 1 << 18, generator: torch.Generator | None = None) -> dict:
    """One flat record: f, ∂f/∂w, E[g_μ] and their comparison at (v, ‖w‖ = r, θ)."""
    ste = get_ste(ste)
    grad = population_grad_w_at(v, r, theta, teacher)
    coarse = expected_coarse_grad_at(v, r, theta, teacher, ste, samples=samples, generator=generator)
    vs = teacher.v_star
    scale = teacher.alpha**2 * (1.0 + 1.0 / r) * float(np.sum(np.abs(v)) + np.sum(np.abs(vs))) ** 2
    return {
        "ste": ste.name, "bits": teacher.bits, "alpha": teacher.alpha, "m": teacher.m,
        "n": teacher.n, "r": r, "r_star": teacher.r_star, "theta": theta,
        "theta_over_pi": theta / math.pi, "loss": population_loss_at(v, r, theta, teacher),
        "grad_v_norm": float(np.linalg.norm(population_grad_v_at(v, r, theta, teacher))),
        "vTv_star": float(np.dot(v, teacher.v_star)),
        "grad_w_radial": grad[0], "grad_w_angular": grad[1],
        "coarse_radial": coarse.radial, "coarse_angular": coarse.angular,
        "method": coarse.method, "samples": coarse.samples, **compare(grad, coarse, 1e-12 * scale),
    }


def angle_grid(teacher: Teacher, stes: list[STE | str], thetas: ArrayLike, *, r: float = 1.0,
               v_mode: VMode = "teacher", samples: int = 1 << 18, seed: int = 0) -> list[dict]:
    """Records over θ ∈ ``thetas`` ⊂ (0, π] for every STE; Monte Carlo seeded per point."""
    if v_mode not in ("teacher", "optimal"):
        raise ConfigError("v_mode", f"must be 'teacher' or 'optimal', got {v_mode!r}")
    out = []
    for i, theta in enumerate(np.asarray(thetas, dtype=np.float64)):
        if not 0.0 < theta <= math.pi:
            raise ConfigError("thetas", f"must lie in (0, π], got {theta}")
        v = teacher.v_star if v_mode == "teacher" else optimal_v_at(r, float(theta), teacher)
        for ste in stes:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
            rec = point_record(v, r, float(theta), teacher, ste, samples=samples, generator=gen)
            out.append({"study": "angle_grid", "v_mode": v_mode, "seed": seed, **rec})
    return out


def spurious_radius(teacher: Teacher, lo: float = 0.05, hi: float = 5.0) -> float:
    """argmin_r min_v f(v, r, θ = π): grid of 200 radii, then golden section.

    Returns r* when f does not depend on r (binary σ).
    """
    def f(r: float) -> float:
        return population_loss_at(optimal_v_at(r, math.pi, teacher), r, math.pi, teacher)

    grid = np.geomspace(lo, hi, 200)
    vals = np.array([f(float(r)) for r in grid])
    if vals.max() - vals.min() < 1e-13:
        return teacher.r_star
    i = int(vals.argmin())
    a, b = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(80):
        x1, x2 = b - ratio * (b - a), a + ratio * (b - a)
        if f(x1) < f(x2):
            b = x2
        else:
            a = x1
    return 0.5 * (a + b)


def spurious_records(teacher: Teacher, stes: list[STE | str], *, r: float | None = None,
                     samples: int = 1 << 18, seed: int = 0) -> list[dict]:
    """E[g_μ] at θ = π, v = argmin_v f (Yin et al.'s spurious minimiser), ‖w‖ = r.

    ``r=None`` also minimises f over ‖w‖ (:func:`spurious_radius`), the b-bit analogue.
    """
    radius = spurious_radius(teacher) if r is None else r
    v = optimal_v_at(radius, math.pi, teacher)
    out = []
    for ste in stes:
        gen = torch.Generator().manual_seed(seed)
        rec = point_record(v, radius, math.pi, teacher, ste, samples=samples, generator=gen)
        out.append({"study": "spurious", "v_mode": "optimal", "seed": seed,
                    "radius_rule": "argmin_r" if r is None else "fixed", **rec})
    return out


def trajectory(teacher: Teacher, ste: STE | str, *, theta0: float, r0: float = 1.0,
               v0: ArrayLike | None = None, lr: float = 0.1, steps: int = 300,
               record_every: int = 10, samples: int = 1 << 14, seed: int = 0) -> list[dict]:
    """Expected coarse gradient descent: v ← v − η∂f/∂v, w ← w − ηE[g_μ] (exact f, ∂f/∂v).

    Starts at ‖w‖ = r0, θ = θ0, v = v0 (default argmin_v f). w stays in the plane of
    (w₀, w*), so it is tracked as (r, θ); θ is kept in [0, π] (reflection). Monte Carlo
    STEs draw ``samples`` per step from one generator seeded with ``seed``.
    """
    ste = get_ste(ste)
    gen = torch.Generator().manual_seed(seed)
    v = optimal_v_at(r0, theta0, teacher) if v0 is None else np.asarray(v0, dtype=np.float64).copy()
    # 2-D coordinates: w* along x; w = r(cos θ, sin θ).
    w = r0 * np.array([math.cos(theta0), math.sin(theta0)])
    out = []
    for step in range(steps + 1):
        r = float(np.linalg.norm(w))
        if not r > 1e-12:
            out.append({"study": "trajectory", "ste": ste.name, "bits": teacher.bits, "step": step,
                        "collapsed": True})
            break
        theta = math.atan2(abs(w[1]), w[0])
        w_hat = w / r
        perp = np.array([1.0, 0.0]) - w_hat[0] * w_hat  # P⊥ŵ*, norm sin θ
        norm = float(np.linalg.norm(perp))
        e2 = perp / norm if norm > 1e-15 else np.array([-w_hat[1], w_hat[0]])
        coarse = expected_coarse_grad_at(v, r, theta, teacher, ste, samples=samples, generator=gen)
        grad_v = population_grad_v_at(v, r, theta, teacher)
        if step % record_every == 0 or step == steps:
            grad = population_grad_w_at(v, r, theta, teacher)
            out.append({"study": "trajectory", "ste": ste.name, "bits": teacher.bits,
                        "alpha": teacher.alpha, "lr": lr, "theta0": theta0, "step": step,
                        "r": r, "theta": theta, "loss": population_loss_at(v, r, theta, teacher),
                        "collapsed": False, **compare(grad, coarse)})
        w = w - lr * (coarse.radial * w_hat + coarse.angular * e2)
        v = v - lr * grad_v
    return out
