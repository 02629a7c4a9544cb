"""Brute-force Monte Carlo over Z: the oracle for the exact population formulas.

Per sample Z ∈ R^{m×n} (i.i.d. N(0, 1)), with σ = :func:`coarsegrad.staircase` and μ′ =
``ste.dmu`` (the library's own forward and STE, evaluated in float64):

    ℓ(Z)   = ½ (vᵀσ(Zw) − v*ᵀσ(Zw*))²
    g_μ(Z) = Σ_i (y − y*) v_i μ′(Z_i·w) Z_i           (Yin et al. 2019, eq. for the coarse gradient)

Means come with standard errors sd/√N. Randomness only from the given ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from coarsegrad.errors import ConfigError
from coarsegrad.quant.autograd import staircase
from coarsegrad.quant.ste import STE, get_ste
from coarsegrad.theory.population import Teacher


@dataclass(frozen=True)
class MonteCarloEstimate:
    """Sample means and their standard errors over ``samples`` draws of Z."""

    loss: float
    loss_se: float
    grad: NDArray[np.float64]
    grad_se: NDArray[np.float64]
    samples: int


def sample_loss_and_coarse_grad(
    Z: torch.Tensor, v: ArrayLike, w: ArrayLike, teacher: Teacher, ste: STE | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ℓ(Z) [N], g_μ(Z) [N, n]) for a batch Z of shape [N, m, n] (float64)."""
    ste = get_ste(ste)
    Z = Z.to(torch.float64)
    v_t = torch.as_tensor(np.asarray(v, dtype=np.float64))
    w_t = torch.as_tensor(np.asarray(w, dtype=np.float64))
    vs = torch.as_tensor(teacher.v_star)
    ws = torch.as_tensor(teacher.w_star)
    quant = teacher.quant
    pre = Z @ w_t
    diff = staircase(pre, quant) @ v_t - staircase(Z @ ws, quant) @ vs
    weights = v_t * ste.derivative(pre, quant.q_max).to(torch.float64)  # [N, m]
    grad = diff[:, None] * torch.einsum("bm,bmn->bn", weights, Z)
    return 0.5 * diff * diff, grad


def monte_carlo(
    v: ArrayLike,
    w: ArrayLike,
    teacher: Teacher,
    ste: STE | str,
    samples: int,
    generator: torch.Generator,
    batch: int = 65536,
) -> MonteCarloEstimate:
    """Estimate f(v, w) and E_Z[g_μ] from ``samples`` independent Z, with standard errors."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ConfigError("samples", f"must be an integer >= 2, got {samples!r}")
    m, n = teacher.m, teacher.n
    total = torch.zeros(1 + n, dtype=torch.float64)
    total_sq = torch.zeros(1 + n, dtype=torch.float64)
    done = 0
    while done < samples:
        size = min(batch, samples - done)
        Z = torch.randn(size, m, n, generator=generator, dtype=torch.float64)
        loss, grad = sample_loss_and_coarse_grad(Z, v, w, teacher, ste)
        values = torch.cat([loss[:, None], grad], dim=1)
        total += values.sum(0)
        total_sq += (values * values).sum(0)
        done += size
    mean = total / samples
    var = (total_sq / samples - mean * mean) * samples / (samples - 1)
    se = torch.sqrt(torch.clamp(var, min=0.0) / samples).numpy()
    mean_np = mean.numpy()
    return MonteCarloEstimate(float(mean_np[0]), float(se[0]), mean_np[1:].copy(), se[1:].copy(), samples)


def standard_error_ok(estimate: float | NDArray, se: float | NDArray, exact: float | NDArray,
                      z: float = 4.0, floor: float = 1e-12) -> bool:
    """True if |estimate − exact| ≤ z·se + floor everywhere."""
    gap = np.abs(np.asarray(estimate) - np.asarray(exact))
    return bool(np.all(gap <= z * np.asarray(se) + floor)) and math.isfinite(float(np.max(gap)))
