"""Straight-through estimators (STEs): proxies μ whose derivative μ′ replaces σ′.

Forward uses the staircase σ; backward multiplies the incoming gradient by μ′(x),
evaluated at the pre-activation x. Every STE here is a function of x and of
q = q_max = (2^b − 1)·α, the top level of the staircase.

| name              | μ(x)                                   | μ′(x)                                  |
| ----------------- | -------------------------------------- | -------------------------------------- |
| identity          | x                                      | 1                                      |
| relu              | max(x, 0)                              | 1{x > 0}                               |
| clipped_relu      | clip(x, 0, q)                          | 1{0 < x ≤ q}                           |
| log_tailed_relu   | 0, x, q + log(x − q + 1) (x ≤ 0, ≤ q, > q) | 0, 1, 1/(x − q + 1)                |

Boundary rule: μ′(0) = 0 for every STE but identity, μ′(q) = 1 (right-closed, like σ).
Reference: Yin et al., "Understanding Straight-Through Estimator in Training Activation
Quantized Neural Nets", ICLR 2019 (arXiv 1903.05662); Long, Yin & Xin, arXiv 2011.11256.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from coarsegrad.errors import ConfigError
from coarsegrad.quant.staircase import check_alpha, check_bits, q_max

Fn = Callable[[torch.Tensor, float], torch.Tensor]
"""A function of (x, q) -> tensor shaped like x."""

# Gauss–Legendre nodes/weights on [0, 1] for μ(x) = ∫_0^x μ′ = x·∫_0^1 μ′(x·t) dt.
_nodes, _weights = np.polynomial.legendre.leggauss(64)
_GL_NODES = torch.tensor(0.5 * (_nodes + 1.0), dtype=torch.float64)
_GL_WEIGHTS = torch.tensor(0.5 * _weights, dtype=torch.float64)


@dataclass(frozen=True)
class STE:
    """A straight-through estimator: μ′(x; q) and μ(x; q).

    ``derivative(x, q)`` is μ′; ``proxy(x, q)`` is μ, or ``None`` to integrate μ′
    from 0 (64-point Gauss–Legendre on the pieces split at 0 and q, so exact to
    rounding for μ′ that is a polynomial of degree < 128 on each piece). ``indicator(x, q)``, when given, returns the boolean set where
    μ′ = 1 and μ′ is 0 elsewhere: backward then saves one byte per element instead
    of the float pre-activation.
    """

    name: str
    derivative: Fn
    proxy: Fn | None = None
    indicator: Callable[[torch.Tensor, float], torch.Tensor] | None = None

    def dmu(self, x: torch.Tensor, bits: int, alpha: float) -> torch.Tensor:
        """μ′(x) for the staircase with ``bits`` and ``alpha``."""
        return self.derivative(x, q_max(bits, alpha))

    def mu(self, x: torch.Tensor, bits: int, alpha: float) -> torch.Tensor:
        """μ(x) for the staircase with ``bits`` and ``alpha``."""
        q = q_max(bits, alpha)
        if self.proxy is not None:
            return self.proxy(x, q)
        # Split at the natural kinks 0 and q so each piece is smooth:
        # μ(x) = ∫_0^min(x,q) μ′ + ∫_q^max(x,q) μ′.
        x64 = x.to(torch.float64)
        lower = self._integral(torch.zeros_like(x64), torch.clamp(x64, max=q), q)
        upper = self._integral(torch.full_like(x64, q), torch.clamp(x64, min=q), q)
        return (lower + upper).to(x.dtype)

    def _integral(self, a: torch.Tensor, b: torch.Tensor, q: float) -> torch.Tensor:
        """∫_a^b μ′(t; q) dt elementwise, by 64-point Gauss–Legendre."""
        t = a.unsqueeze(-1) + (b - a).unsqueeze(-1) * _GL_NODES
        return (b - a) * (self.derivative(t, q) * _GL_WEIGHTS).sum(-1)

def _identity_d(x: torch.Tensor, q: float) -> torch.Tensor:
    return torch.ones_like(x)


def _relu_mask(x: torch.Tensor, q: float) -> torch.Tensor:
    return x > 0


def _clipped_mask(x: torch.Tensor, q: float) -> torch.Tensor:
    return (x > 0) & (x <= q)


def _log_tailed_d(x: torch.Tensor, q: float) -> torch.Tensor:
    tail = 1.0 / (torch.clamp(x, min=q) - q + 1.0)
    return torch.where(x > q, tail, (x > 0).to(x.dtype))


def _log_tailed_mu(x: torch.Tensor, q: float) -> torch.Tensor:
    tail = q + torch.log1p(torch.clamp(x, min=q) - q)
    return torch.where(x > q, tail, torch.clamp(x, min=0.0))


IDENTITY = STE(
    "identity", derivative=_identity_d, proxy=lambda x, q: x.clone(),
    indicator=lambda x, q: torch.ones_like(x, dtype=torch.bool),
)
"""μ(x) = x, μ′ = 1 everywhere. Unstable near good minima (ICLR 2019); not monotone."""

RELU = STE(
    "relu", derivative=lambda x, q: _relu_mask(x, q).to(x.dtype),
    proxy=lambda x, q: torch.clamp(x, min=0.0), indicator=_relu_mask,
)
"""μ(x) = max(x, 0), μ′(x) = 1{x > 0}."""

CLIPPED_RELU = STE(
    "clipped_relu", derivative=lambda x, q: _clipped_mask(x, q).to(x.dtype),
    proxy=lambda x, q: torch.clamp(x, 0.0, q), indicator=_clipped_mask,
)
"""μ(x) = clip(x, 0, q), μ′(x) = 1{0 < x ≤ q}."""

LOG_TAILED_RELU = STE("log_tailed_relu", derivative=_log_tailed_d, proxy=_log_tailed_mu)
"""μ′(x) = 0 (x ≤ 0), 1 (0 < x ≤ q), 1/(x − q + 1) (x > q); μ = q + log(x − q + 1) for x > q."""

BUILTIN_STES: dict[str, STE] = {
    s.name: s for s in (IDENTITY, RELU, CLIPPED_RELU, LOG_TAILED_RELU)
}


def custom_ste(name: str, derivative: Fn, proxy: Fn | None = None) -> STE:
    """Build an STE from a μ′ callable ``derivative(x, q)`` (and optionally μ).

    Example, a linear-decay STE: ``custom_ste("decay", lambda x, q: (x > 0) * (x <= 2 * q)
    * (1 - x / (2 * q)))``.
    """
    if not callable(derivative):
        raise ConfigError("derivative", "must be a callable (x, q) -> tensor")
    return STE(name=name, derivative=derivative, proxy=proxy)


def get_ste(name: str | STE) -> STE:
    """Return the STE called ``name`` (or ``name`` itself if it is already an STE)."""
    if isinstance(name, STE):
        return name
    if name not in BUILTIN_STES:
        valid = ", ".join(BUILTIN_STES)
        raise ConfigError("ste", f"unknown STE {name!r}; valid names: {valid}")
    return BUILTIN_STES[name]


def monotone_violations(ste: STE | str, bits: int, alpha: float) -> list[str]:
    """Reasons ``ste`` falls outside the monotone class, checked on a dense grid.

    The class (method.md, our reading): μ′ = 0 on (−∞, 0], μ′ > 0 on (0, q], μ′
    non-increasing on (0, ∞). The grid covers [−4q, 16q] with every kα, 0 and q and
    their float neighbours; an empty list means no violation was found.
    """
    ste = get_ste(ste)
    bits, alpha = check_bits(bits), check_alpha(alpha)
    q = q_max(bits, alpha)
    ks = torch.arange(0, (1 << bits), dtype=torch.float64) * alpha
    eps = 1e-9 * max(q, 1.0)
    grid = torch.cat([
        torch.linspace(-4 * q, 16 * q, 20001, dtype=torch.float64),
        ks, ks + eps, ks - eps, torch.tensor([q, q + eps, q - eps, 1e-12], dtype=torch.float64),
    ]).unique()
    d = ste.dmu(grid, bits, alpha).to(torch.float64)
    problems = []
    if not torch.isfinite(d).all():
        problems.append("μ′ is not finite everywhere")
    if (d[grid <= 0] != 0).any():
        problems.append("μ′ is not 0 on (−∞, 0]")
    inside = (grid > 0) & (grid <= q)
    if not (d[inside] > 0).all():
        problems.append("μ′ is not > 0 on (0, q]")
    positive = d[grid > 0]
    if (positive[1:] > positive[:-1] + 1e-12).any():
        problems.append("μ′ is not non-increasing on (0, ∞)")
    return problems


def is_monotone(ste: STE | str, bits: int, alpha: float) -> bool:
    """True if ``ste`` is in the monotone class for these bits and alpha (numerical check)."""
    return not monotone_violations(ste, bits, alpha)
