"""The b-bit quantized ReLU ("staircase"), its roundings and the MSE-optimal step α.

σ(x) = α·c(x),   c(x) = #{j ∈ 0..L−1 : x > t_j},   L = 2^b − 1,   t_j = (j + o)·α

with the rounding's offset o: ``ceil`` o = 0 (the authors' σ = α·clip(⌈x/α⌉, 0, L)),
``nearest`` o = ½ (α·clip(round(x/α), 0, L)), ``floor`` o = 1 (α·clip(⌊x/α⌋, 0, L)).
Level k covers the cell (t_{k−1}, t_k] (t_{−1} = −∞, t_L = +∞): a point exactly at a
threshold goes to the lower level (right-closed steps), so σ(kα) = kα for ``ceil``.
In floating point the thresholds are the numbers fl((j + o)·α) of the input's dtype
(:meth:`coarsegrad.ActQuant.thresholds`). b = 1 with ``ceil`` is α·1{x > 0}.
Reference: Long, Yin & Xin, arXiv 2011.11256; Yin et al., ICLR 2019 (arXiv 1903.05662).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

from coarsegrad.errors import ConfigError
from coarsegrad.validate import integer, number

MAX_BITS = 8
Rounding = Literal["ceil", "nearest", "floor"]
ROUNDING_OFFSET: dict[str, float] = {"ceil": 0.0, "nearest": 0.5, "floor": 1.0}
"""o in t_j = (j + o)·α, per rounding: the one place the three roundings are defined."""
DEFAULT_ROUNDING: Rounding = "nearest"
"""The default rounding: first threshold α/2 > 0, under which the paper's claim (monotone
STEs reach 100% training accuracy, identity does not) holds at every bit width, 1 bit
included; with ``ceil`` (first threshold 0) 1 bit is 0/10 (docs/synthetic.md)."""
LEGACY_ROUNDING: Rounding = "ceil"
"""The rounding of a saved spec, config or file without a ``rounding`` field: everything
written before the field existed used ``ceil``, the default until ``nearest`` replaced it."""


def check_bits(bits: object) -> int:
    """Return ``bits`` if it is an int in 1..8, else raise ``ConfigError('bits')``."""
    return integer("bits", bits, lo=1, hi=MAX_BITS)


def check_alpha(alpha: object) -> float:
    """Return ``alpha`` as a float if it is finite and > 0, else raise ``ConfigError('alpha')``."""
    return number("alpha", alpha, lo=0.0, lo_open=True)


F32_TINY = 2.0**-126  # smallest normal float32
F32_MAX = (2.0 - 2.0**-23) * 2.0**127  # largest finite float32


def check_alpha_range(bits: int, alpha: object) -> float:
    """``alpha`` if α and q_max = (2^b − 1)α are finite normal float32 numbers
    (2^−126 ≤ α ≤ max/(2^b − 1)), the dtype of training; else ``ConfigError('alpha')``
    stating the range for ``bits``."""
    value = check_alpha(alpha)
    top = F32_MAX / ((1 << check_bits(bits)) - 1)
    if not F32_TINY <= value <= top:
        raise ConfigError("alpha", f"must be in [{F32_TINY:.6g}, {top:.6g}] for bits={bits}, so that α and "
                                   f"(2^b − 1)·α are finite normal float32 numbers; got {value!r}")
    return value


def num_levels(bits: int) -> int:
    """Largest code L = 2^b − 1 (read it from :attr:`coarsegrad.ActQuant.levels`)."""
    return (1 << check_bits(bits)) - 1


def check_rounding(rounding: object) -> Rounding:
    """Return ``rounding`` if it is one of ceil | nearest | floor, else raise ``ConfigError('rounding')``."""
    if rounding == "ceil" or rounding == "nearest" or rounding == "floor":
        return rounding  # narrowed by the comparisons
    raise ConfigError("rounding", f"must be one of {', '.join(ROUNDING_OFFSET)}, got {rounding!r}")


def _normal_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _gaussian_sq_error(a: float, b: float, c: float) -> float:
    """∫_a^b (x − c)² φ(x) dx for the standard normal density φ (b may be +inf).

    Uses ∫x²φ = Φ(x) − xφ(x), ∫xφ = −φ(x), ∫φ = Φ(x) between the limits.
    """
    pdf_b = 0.0 if math.isinf(b) else _normal_pdf(b)
    b_pdf_b = 0.0 if math.isinf(b) else b * pdf_b
    cdf_b = 1.0 if math.isinf(b) else _normal_cdf(b)
    mass = cdf_b - _normal_cdf(a)
    first = _normal_pdf(a) - pdf_b
    second = mass - (b_pdf_b - a * _normal_pdf(a))
    return second - 2.0 * c * first + c * c * mass


def half_gaussian_mse(alpha: float, bits: int, rounding: Rounding = "nearest") -> float:
    """E[(X − σ(X))²] for X = |N(0,1)| and the staircase σ with this rounding.

    Exact: Σ_k ∫ over level k's cell (t_{k−1}, t_k] ∩ [0, ∞) of (x − kα)² 2φ(x) dx, the
    Gaussian second moment about kα in closed form through Φ and φ (2φ: the half
    Gaussian density on [0, ∞)). ``nearest`` is Lloyd's uniform quantizer.
    """
    levels = num_levels(bits)
    alpha = check_alpha(alpha)
    offset = ROUNDING_OFFSET[check_rounding(rounding)]
    total = 0.0
    for k in range(levels + 1):
        lo = max(0.0, (k - 1 + offset) * alpha)
        hi = math.inf if k == levels else (k + offset) * alpha
        if hi > lo:
            total += _gaussian_sq_error(lo, hi, k * alpha)
    return 2.0 * total


def optimal_alpha(bits: int, rounding: Rounding = "nearest") -> float:
    """MSE-optimal uniform step α*(b) = argmin_α E[(X − σ_α(X))²], X half-Gaussian.

    σ_α rounds by ``rounding`` (default ``nearest``: Lloyd's uniform quantizer, whose
    published values (Yin et al. 2019) are b=1: 1.2221, b=2: 0.6511, b=4: 0.1946; the
    authors use these with their ``ceil`` staircase, see :class:`coarsegrad.ActQuant`).
    The objective is evaluated exactly (:func:`half_gaussian_mse`) and minimised by a
    grid search followed by golden-section refinement. Cached: each (b, rounding) is
    solved once per process.
    """
    return _optimal_alpha(check_bits(bits), check_rounding(rounding))


@functools.lru_cache(maxsize=None)
def _optimal_alpha(bits: int, rounding: Rounding) -> float:
    levels = num_levels(bits)
    # The optimum lies well inside (0, 6/L]: the top level never needs to pass 6σ.
    hi_bound = 6.0 / levels
    grid = [hi_bound * (i + 1) / 400 for i in range(400)]
    losses = [half_gaussian_mse(a, bits, rounding) for a in grid]
    best = min(range(len(grid)), key=losses.__getitem__)
    lo = grid[max(best - 1, 0)]
    hi = grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(100):
        a = hi - ratio * (hi - lo)
        b = lo + ratio * (hi - lo)
        if half_gaussian_mse(a, bits, rounding) < half_gaussian_mse(b, bits, rounding):
            hi = b
        else:
            lo = a
    return 0.5 * (lo + hi)


optimal_alpha.cache_info = _optimal_alpha.cache_info  # type: ignore[attr-defined]
optimal_alpha.cache_clear = _optimal_alpha.cache_clear  # type: ignore[attr-defined]
