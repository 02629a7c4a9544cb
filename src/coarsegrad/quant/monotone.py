"""The monotone class of STEs (method.md, our reading), checked numerically."""

from __future__ import annotations

import torch

from coarsegrad.quant.spec import ActQuant, as_quant
from coarsegrad.quant.ste import STE, get_ste


def monotone_violations(ste: STE | str, quant: ActQuant | int, alpha: float | None = None) -> list[str]:
    """Reasons ``ste`` falls outside the monotone class for ``quant``'s q (or bits, alpha).

    The class: μ′ = 0 on (−∞, 0], μ′ > 0 on (0, q], μ′ non-increasing on (0, ∞). The
    grid covers [−4q, 16q] with every kα, 0 and q and their neighbours; an empty list
    means no violation was found.
    """
    ste = get_ste(ste)
    spec = as_quant(quant, alpha)
    q = spec.q_max
    ks = torch.arange(0, spec.levels + 1, dtype=torch.float64) * spec.alpha
    eps = 1e-9 * max(q, 1.0)
    grid = torch.sort(torch.cat([
        torch.linspace(-4 * q, 16 * q, 20001, dtype=torch.float64),
        ks, ks + eps, ks - eps, torch.tensor([q, q + eps, q - eps, 1e-12], dtype=torch.float64),
    ])).values
    d = ste.derivative(grid, q).to(torch.float64)
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


def is_monotone(ste: STE | str, quant: ActQuant | int, alpha: float | None = None) -> bool:
    """True if ``ste`` is in the monotone class for this spec (numerical check)."""
    return not monotone_violations(ste, quant, alpha)
