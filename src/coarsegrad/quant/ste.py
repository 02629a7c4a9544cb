"""Straight-through estimators (STEs): proxies μ whose derivative μ′ replaces σ′.

Forward uses the staircase σ; backward multiplies the incoming gradient by μ′(x),
evaluated at the pre-activation x. Every STE here is a function of x and of
q = q_max = (2^b − 1)·α, the top level of the staircase.

| name            | μ(x)                                       | μ′(x)                                |
| --------------- | ------------------------------------------ | ------------------------------------ |
| identity        | x                                          | 1                                    |
| relu            | max(x, 0)                                  | 1{x > 0}                             |
| clipped_relu    | clip(x, 0, q)                              | 1{0 < x ≤ q}                         |
| log_tailed_relu | 0, x, q + log(x − q + 1) (x ≤ 0, ≤ q, > q) | 1 on (0, q], 1/(x − q + 1) on (q, ∞) |

(μ′ is 0 off the listed pieces; this table is :func:`ste_table`, rendered from each
STE's piecewise description.) Boundary rule: μ′(0) = 0 for every STE but identity,
μ′(q) = 1 (right-closed, like σ). Reference: Yin et al., "Understanding
Straight-Through Estimator in Training Activation Quantized Neural Nets", ICLR 2019
(arXiv 1903.05662); Long, Yin & Xin, arXiv 2011.11256.

An STE's μ′ is written once, as :class:`Piece` s; the indicator mask, the μ′ tensor
function, the fused backward kernel (:mod:`coarsegrad.quant.kernels`), the theory
lab's intervals (:meth:`STE.interval`) and the table above are all derived from them.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch

from coarsegrad.errors import ConfigError

Fn = Callable[[torch.Tensor, float], torch.Tensor]
"""A function of (x, q) -> tensor shaped like x."""

BOUNDS = (-math.inf, 0.0, 1.0, math.inf)
"""Piece ends, in units of q: −∞, 0, q, +∞."""

# Gauss–Legendre nodes/weights on [0, 1] for μ(x) = ∫_0^x μ′ = x·∫_0^1 μ′(x·t) dt.
_nodes, _weights = np.polynomial.legendre.leggauss(64)
_GL_NODES = torch.tensor(0.5 * (_nodes + 1.0), dtype=torch.float64)
_GL_WEIGHTS = torch.tensor(0.5 * _weights, dtype=torch.float64)


def _bound(unit: float, q: float) -> float:
    return unit * q if math.isfinite(unit) else unit


def _value_text(value: object) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else "f(x, q)"


def _bound_text(unit: float) -> str:
    return {-math.inf: "−∞", 0.0: "0", 1.0: "q", math.inf: "∞"}[unit]


@dataclass(frozen=True)
class Piece:
    """μ′(x) = ``value`` for x between ``lo``·q and ``hi``·q (ends in :data:`BOUNDS`).

    Ends are open unless ``lo_closed``/``hi_closed`` (default (lo, hi], right-closed
    like σ; an infinite end is always open). ``value`` is a constant or a callable
    (x, q) -> tensor, described in the docs table by ``text``.
    """

    lo: float
    hi: float
    value: Union[float, Fn] = 1.0
    text: str = ""
    lo_closed: bool = False
    hi_closed: bool = True

    def __post_init__(self) -> None:
        if self.lo not in BOUNDS or self.hi not in BOUNDS or not self.lo < self.hi:
            raise ConfigError("pieces", f"ends must be in (−inf, 0, 1, inf) with lo < hi, got {self.lo}, {self.hi}")

    @property
    def is_one(self) -> bool:
        """True when μ′ = 1 on this piece."""
        return not callable(self.value) and float(self.value) == 1.0

    def _sides(self, q: float) -> list[tuple[Callable[..., torch.Tensor], float]]:
        """(comparison, bound) of each finite end: x ≥ / > lo·q, x ≤ / < hi·q."""
        lo, hi = _bound(self.lo, q), _bound(self.hi, q)
        sides: list[tuple[Callable[..., torch.Tensor], float]] = []
        if math.isfinite(lo):
            sides.append((torch.ge if self.lo_closed else torch.gt, lo))
        if math.isfinite(hi):
            sides.append((torch.le if self.hi_closed else torch.lt, hi))
        return sides

    def mask(self, x: torch.Tensor, q: float) -> torch.Tensor:
        """The boolean set of x in this piece (no comparison at an infinite end)."""
        sides = [compare(x, bound) for compare, bound in self._sides(q)]
        if not sides:
            return torch.ones_like(x, dtype=torch.bool)
        return sides[0] if len(sides) == 1 else sides[0].logical_and_(sides[1])

    def ones(self, x: torch.Tensor, q: float) -> torch.Tensor:
        """1 on this piece, 0 off it (and at NaN), as ``x``'s dtype: comparisons that write
        floats, several times faster than a bool mask and a conversion."""
        out = None
        for compare, bound in self._sides(q):
            side = compare(x, bound, out=torch.empty_like(x))
            out = side if out is None else out.mul_(side)
        return torch.ones_like(x) if out is None else out

    def term(self, x: torch.Tensor, q: float) -> torch.Tensor | None:
        """value(x)·1{x on the piece} without a select: value(clip(x, lo, hi))·ones(x),
        equal to it wherever x is not NaN (on the piece clip(x) = x; off it value is
        taken at an end and multiplied by 0). None when value is not finite at a finite
        end (then 0·value would not be 0) or is a non-finite constant."""
        if not callable(self.value):
            v = float(self.value)
            if not math.isfinite(v):
                return None
            ones = self.ones(x, q)
            return ones if v == 1.0 else ones.mul_(v)
        if not _finite_at_ends(self, q, x.dtype):
            return None
        lo, hi = _bound(self.lo, q), _bound(self.hi, q)
        clipped = torch.clamp(x, lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None)
        return self.ones(x, q).mul_(self.value(clipped, q))

    def condition(self) -> str:
        """The piece as a condition on x, e.g. ``0 < x ≤ q``."""
        lo, hi = self.lo, self.hi
        lo_op, hi_op = ("≤" if self.lo_closed else "<"), ("≤" if self.hi_closed else "<")
        if math.isinf(lo) and math.isinf(hi):
            return "x ∈ ℝ"
        if math.isinf(hi):
            return f"x {'≥' if self.lo_closed else '>'} {_bound_text(lo)}"
        if math.isinf(lo):
            return f"x {hi_op} {_bound_text(hi)}"
        return f"{_bound_text(lo)} {lo_op} x {hi_op} {_bound_text(hi)}"

    def interval_text(self) -> str:
        return (f"{'[' if self.lo_closed and math.isfinite(self.lo) else '('}{_bound_text(self.lo)}, "
                f"{_bound_text(self.hi)}{']' if self.hi_closed and math.isfinite(self.hi) else ')'}")


@dataclass(frozen=True)
class STE:
    """A straight-through estimator: μ′(x; q) and μ(x; q).

    μ′ is ``pieces`` (μ′ = each piece's value on it, 0 off every piece), or for a
    custom STE the callable ``user_derivative(x, q)``. ``proxy(x, q)`` is μ, or
    ``None`` to integrate μ′ from 0 (64-point Gauss–Legendre on the pieces split at 0
    and q, so exact to rounding for μ′ that is a polynomial of degree < 128 on each
    piece). ``mu_text`` describes μ for the docs table.
    """

    name: str
    pieces: tuple[Piece, ...] | None = None
    user_derivative: Fn | None = None
    proxy: Fn | None = None
    mu_text: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("ste", f"an STE needs a non-empty name, got {self.name!r}")
        if (self.pieces is None) == (self.user_derivative is None):
            raise ConfigError("ste", f"{self.name}: give exactly one of pieces or a derivative")
        ordered = sorted(self.pieces or (), key=lambda p: p.lo)
        for a, b in itertools.pairwise(ordered):
            if a.hi > b.lo or (a.hi == b.lo and a.hi_closed and b.lo_closed):
                raise ConfigError("pieces", f"{self.name}: pieces {a.interval_text()} and {b.interval_text()} overlap")

    def derivative(self, x: torch.Tensor, q: float) -> torch.Tensor:
        """μ′(x) with q = q_max, as ``x``'s dtype."""
        if self.pieces is None:
            assert self.user_derivative is not None
            return self.user_derivative(x, q)
        # Σ over the (disjoint) pieces of value·1{piece} (Piece.term, no select: 4–5× faster
        # than torch.where over a bool mask here, the same numbers off NaN); a piece whose
        # value is not finite at an end goes through torch.where
        out = None
        for piece in self.pieces:
            term = piece.term(x, q)
            if term is not None:
                out = term if out is None else out.add_(term)
                continue
            value = piece.value(x, q) if callable(piece.value) else float(piece.value)
            out = torch.where(piece.mask(x, q), value, torch.zeros_like(x) if out is None else out)
        return torch.zeros_like(x) if out is None else out

    @property
    def is_indicator(self) -> bool:
        """True when μ′ ∈ {0, 1} is known from the description (backward can keep a mask)."""
        return self.pieces is not None and all(p.is_one for p in self.pieces)

    def indicator(self, x: torch.Tensor, q: float) -> torch.Tensor:
        """The boolean set where μ′ = 1, for an indicator STE (:attr:`is_indicator`)."""
        if self.pieces is None or not self.is_indicator:
            raise ConfigError("ste", f"{self.name} is not an indicator STE")
        mask = torch.zeros_like(x, dtype=torch.bool)
        for piece in self.pieces:
            mask = mask | piece.mask(x, q)
        return mask

    def unit_interval(self) -> tuple[float, float] | None:
        """(lo, hi) in units of q with μ′ = 1{lo·q < x ≤ hi·q}, or None for other STEs."""
        if self.pieces is None or len(self.pieces) != 1:
            return None
        p = self.pieces[0]
        right_closed = not p.lo_closed and (p.hi_closed or math.isinf(p.hi))
        return (p.lo, p.hi) if p.is_one and right_closed else None

    def interval(self, q: float) -> tuple[float, float] | None:
        """(lo, hi) with μ′ = 1{lo < x ≤ hi} (the theory lab's exact case), else None."""
        unit = self.unit_interval()
        return None if unit is None else (_bound(unit[0], q), _bound(unit[1], q))

    def derivative_text(self) -> str:
        """μ′ as text, from the pieces (``custom`` for a user callable)."""
        if self.pieces is None:
            return "custom"
        if self.is_indicator and len(self.pieces) == 1:
            cond = self.pieces[0].condition()
            return "1" if cond == "x ∈ ℝ" else f"1{{{cond}}}"
        return ", ".join(f"{p.text or _value_text(p.value)} on {p.interval_text()}" for p in self.pieces)

    def mu(self, x: torch.Tensor, q: float) -> torch.Tensor:
        """μ(x) with q = q_max."""
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


@functools.lru_cache(maxsize=256)
def _finite_at_ends(piece: Piece, q: float, dtype: torch.dtype) -> bool:
    """True when the piece's callable value is finite at its finite ends (in ``dtype``)."""
    ends = [b for b in (_bound(piece.lo, q), _bound(piece.hi, q)) if math.isfinite(b)]
    if not ends:
        return True
    assert callable(piece.value)
    return bool(torch.isfinite(piece.value(torch.tensor(ends, dtype=dtype), q)).all())


def _log_tail(x: torch.Tensor, q: float) -> torch.Tensor:
    return 1.0 / (x - q + 1.0)


def _log_tailed_mu(x: torch.Tensor, q: float) -> torch.Tensor:
    tail = q + torch.log1p(torch.clamp(x, min=q) - q)
    return torch.where(x > q, tail, torch.clamp(x, min=0.0))


IDENTITY = STE("identity", (Piece(-math.inf, math.inf),), proxy=lambda x, q: x.clone(), mu_text="x")
"""μ(x) = x, μ′ = 1 everywhere. Unstable near good minima (ICLR 2019); not monotone."""

RELU = STE("relu", (Piece(0.0, math.inf),), proxy=lambda x, q: torch.clamp(x, min=0.0), mu_text="max(x, 0)")
"""μ(x) = max(x, 0), μ′(x) = 1{x > 0}."""

CLIPPED_RELU = STE("clipped_relu", (Piece(0.0, 1.0),), proxy=lambda x, q: torch.clamp(x, 0.0, q),
                   mu_text="clip(x, 0, q)")
"""μ(x) = clip(x, 0, q), μ′(x) = 1{0 < x ≤ q}."""

LOG_TAILED_RELU = STE(
    "log_tailed_relu", (Piece(0.0, 1.0), Piece(1.0, math.inf, _log_tail, "1/(x − q + 1)")),
    proxy=_log_tailed_mu, mu_text="0, x, q + log(x − q + 1) (x ≤ 0, ≤ q, > q)",
)
"""μ′(x) = 0 (x ≤ 0), 1 (0 < x ≤ q), 1/(x − q + 1) (x > q); μ = q + log(x − q + 1) for x > q."""

BUILTIN_STES: dict[str, STE] = {
    s.name: s for s in (IDENTITY, RELU, CLIPPED_RELU, LOG_TAILED_RELU)
}


def ste_table(stes: tuple[STE, ...] | None = None) -> str:
    """The Markdown table | name | μ(x) | μ′(x) | of ``stes`` (default: the built-ins),
    μ′ rendered from each STE's pieces."""
    rows = [(s.name, s.mu_text, s.derivative_text()) for s in (stes or tuple(BUILTIN_STES.values()))]
    head = ("name", "μ(x)", "μ′(x)")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(head), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def custom_ste(name: str, derivative: Fn, proxy: Fn | None = None) -> STE:
    """Build an STE from a μ′ callable ``derivative(x, q)`` (and optionally μ).

    Example, a linear-decay STE: ``custom_ste("decay", lambda x, q: (x > 0) * (x <= 2 * q)
    * (1 - x / (2 * q)))``. Its backward evaluates μ′ on the kept pre-activation (no
    fused kernel applies); it cannot be saved by name in a checkpoint.
    """
    if not callable(derivative):
        raise ConfigError("derivative", "must be a callable (x, q) -> tensor")
    return STE(name=name, user_derivative=derivative, proxy=proxy)


def get_ste(name: str | STE) -> STE:
    """Return the STE called ``name`` (or ``name`` itself if it is already an STE)."""
    if isinstance(name, STE):
        return name
    if not isinstance(name, str) or name not in BUILTIN_STES:
        valid = ", ".join(BUILTIN_STES)
        raise ConfigError("ste", f"unknown STE {name!r}; valid names: {valid}")
    return BUILTIN_STES[name]
