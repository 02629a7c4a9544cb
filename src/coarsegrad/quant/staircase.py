"""The b-bit quantized ReLU ("staircase") and its MSE-optimal resolution.

σ(x) = α · clip(⌈x/α⌉, 0, 2^b − 1)

Levels are {0, α, …, (2^b − 1)α}; steps are right-closed: σ(kα) = kα and
σ(kα + ε) = (k+1)α; σ(x) = 0 for x ≤ 0; q_max = (2^b − 1)α. b = 1 is the binary
ReLU α·1{x > 0}. Reference: Long, Yin & Xin, arXiv 2011.11256; Yin et al., ICLR 2019.
"""

from __future__ import annotations

import math

import torch

from coarsegrad.errors import ConfigError
from coarsegrad.validate import integer, number

MAX_BITS = 8


def check_bits(bits: object) -> int:
    """Return ``bits`` if it is an int in 1..8, else raise ``ConfigError('bits')``."""
    return integer("bits", bits, lo=1, hi=MAX_BITS)


def check_alpha(alpha: object) -> float:
    """Return ``alpha`` as a float if it is finite and > 0, else raise ``ConfigError('alpha')``."""
    return number("alpha", alpha, lo=0.0, lo_open=True)


def check_alpha_range(bits: int, alpha: object, dtype: torch.dtype = torch.float32) -> float:
    """``alpha`` if α and q_max = (2^b − 1)α are finite normal numbers of ``dtype``
    (tiny ≤ α, q_max ≤ max), else ``ConfigError('alpha')`` stating the range for ``bits``."""
    value = check_alpha(alpha)
    info = torch.finfo(dtype)
    top = info.max / num_levels(bits)
    if not info.tiny <= value <= top:
        raise ConfigError("alpha", f"must be in [{info.tiny:.6g}, {top:.6g}] for bits={bits}, so that α and "
                                   f"(2^b − 1)·α are finite normal {str(dtype).replace('torch.', '')} numbers; "
                                   f"got {value!r}")
    return value


def num_levels(bits: int) -> int:
    """Largest code L = 2^b − 1."""
    return (1 << check_bits(bits)) - 1


def q_max(bits: int, alpha: float) -> float:
    """Largest output level q = (2^b − 1)·α."""
    return num_levels(bits) * check_alpha(alpha)


def staircase_codes(x: torch.Tensor, bits: int, alpha: float) -> torch.Tensor:
    """Integer codes c(x) = #{j ∈ 0..L−1 : x > fl(j·α)} ∈ {0..L}, as ``x``'s dtype.

    This equals clip(⌈x/α⌉, 0, L) except where x/α rounds across an integer: the
    thresholds are the floating-point numbers fl(jα) in ``x``'s dtype, so σ(fl(kα)) =
    fl(kα) holds exactly. Computed as ⌈x/α⌉ followed by a one-step correction.
    """
    levels = num_levels(bits)
    alpha = check_alpha(alpha)
    code = torch.clamp(torch.ceil(x / alpha), 0, levels)
    # ⌈x/α⌉ can be one off where x/α is within rounding of an integer; fix it against
    # the thresholds fl(jα) themselves.
    too_high = (code >= 1) & ((code - 1) * alpha >= x)
    too_low = (code < levels) & (code * alpha < x)
    return code - too_high.to(code.dtype) + too_low.to(code.dtype)


def staircase(x: torch.Tensor, bits: int, alpha: float) -> torch.Tensor:
    """σ(x) = α·clip(⌈x/α⌉, 0, 2^b − 1), exact at every boundary: σ(kα) = kα.

    Not differentiable (its derivative is 0 almost everywhere); use
    :func:`coarsegrad.quantized_relu` for training with a straight-through estimator.
    """
    return staircase_codes(x, bits, alpha) * check_alpha(alpha)


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


def half_gaussian_mse(alpha: float, bits: int) -> float:
    """E[(X − Q(X))²] for X = |N(0,1)| and Q(x) = α·clip(round(x/α), 0, 2^b − 1).

    Exact: the integral over each rounding cell [(k−½)α, (k+½)α) of the Gaussian
    second moment about kα, in closed form through Φ and φ (a factor 2 for the half
    Gaussian density 2φ on [0, ∞)).
    """
    levels = num_levels(bits)
    alpha = check_alpha(alpha)
    total = 0.0
    for k in range(levels + 1):
        lo = max(0.0, (k - 0.5) * alpha)
        hi = math.inf if k == levels else (k + 0.5) * alpha
        total += _gaussian_sq_error(lo, hi, k * alpha)
    return 2.0 * total


def optimal_alpha(bits: int) -> float:
    """MSE-optimal uniform step α*(b) = argmin_α E[(X − Q_α(X))²], X half-Gaussian.

    Q_α rounds to the nearest level of {0, α, …, (2^b − 1)α} (Lloyd's uniform
    quantizer). The objective is evaluated exactly (:func:`half_gaussian_mse`) and
    minimised by a grid search followed by golden-section refinement. Published
    values (Yin et al. 2019): b=1: 1.2221, b=2: 0.6511, b=4: 0.1946.
    """
    bits = check_bits(bits)
    levels = num_levels(bits)
    # The optimum lies well inside (0, 6/L]: the top level never needs to pass 6σ.
    hi_bound = 6.0 / levels
    grid = [hi_bound * (i + 1) / 400 for i in range(400)]
    losses = [half_gaussian_mse(a, bits) for a in grid]
    best = min(range(len(grid)), key=losses.__getitem__)
    lo = grid[max(best - 1, 0)]
    hi = grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(100):
        a = hi - ratio * (hi - lo)
        b = lo + ratio * (hi - lo)
        if half_gaussian_mse(a, bits) < half_gaussian_mse(b, bits):
            hi = b
        else:
            lo = a
    return 0.5 * (lo + hi)
