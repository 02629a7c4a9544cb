"""The weight projections Q(w) of a :class:`~coarsegrad.quant.weight_spec.WeightQuant`.

Every kind is Q(w) = s·c(w) with integer codes c and a scale s per layer or per output
channel (dim 0; the mean / max below run over the layer, or over each slice w[o]):

* **binary** (BinaryConnect's sign with XNOR-Net's scale; Courbariaux et al. 2015,
  Rastegari et al. 2016)::

      c = sign(w) ∈ {−1, +1},  sign(0) := +1,    s = α = mean|w|

* **ternary** (TWN, Li & Liu, "Ternary weight networks", arXiv 1605.04711, 2016)::

      Δ = 0.7·mean|w|,  c = sign(w)·1{|w| > Δ} ∈ {−1, 0, 1},  s = α = mean of |w| over {|w| > Δ}

  a weight exactly at |w| = Δ goes to 0; an empty set {|w| > Δ} (only for all-zero
  weights) gives α = 0.

* **uniform** symmetric b-bit (M = 2^{b−1} − 1)::

      s = max|w| / M,  c = clip(round_half_even(w/s), −M, M)

  all-zero weights give s = 0 and c = 0 (no division by zero).

* **uniform, learned step** (``step="lsq"``; LSQ, Esser et al., ICLR 2020): the scale is
  the layer's parameter s (``step``, not a statistic)::

      c = clip(round_half_even(w/s), −M, M),   s₀ = 2·mean|w|/√M  (:func:`lsq_initial_step`)

  the codes are :func:`~coarsegrad.quant.learned.lsq_levels`, the rounding of the training
  forward (:func:`~coarsegrad.quant.learned.lsq_quantize`) with w/s in w's dtype, so they
  are exactly those training used (a float32 quotient may round a weight within one
  float32 ulp of a tie (k + ½)·s otherwise than the exact quotient; a float64 forward
  would cost a float64 copy of w and of its gradient every step).

The statistics (mean|w|, Δ, α, max|w|) are computed in float64 and each rounded once to
the weight's dtype; the comparison |w| > Δ and the statistics' quotient w/s are made in
float64, so float32 and float64 weights take the same rule. :func:`weight_codes` is the one
implementation; :func:`project` is s·c made from it, so Q(w) = scales·codes exactly
(what export packs). The codes carry no gradient: the straight-through estimators live
in :mod:`coarsegrad.quant.qlayers`.

Cost (Q(w) runs in every training forward): the elementwise work is done in the
weight's own precision where that gives the float64 rule's result exactly, and only the
sums stay float64. max|w| is exact in any precision, and s = max|w|/M rounded once from
float64 equals the division made in float32 (double rounding is innocuous for a quotient
when 53 ≥ 2·24 + 2). The float32 quotient r = fl32(w/s) is the float64 one rounded once
more; rounding is monotone and every half-integer up to M + ½ is a float32, so
round(r) differs from round(fl64(w/s)) only where r is itself a half-integer: those
entries (rare) are redone in float64.
"""

from __future__ import annotations

import math

import torch

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.quant.learned import lsq_levels
from coarsegrad.quant.weight_spec import TERNARY_RATIO, WeightQuant


def _reduce_dims(w: torch.Tensor, spec: WeightQuant) -> tuple[int, ...]:
    """The dimensions a scale covers: all (layer) or all but dim 0 (channel)."""
    if spec.granularity == "channel":
        return tuple(range(1, w.dim()))
    return tuple(range(w.dim()))


def _shape(stat: torch.Tensor, spec: WeightQuant) -> torch.Tensor:
    """A statistic reduced with keepdim as the scale's shape: [out, 1, …, 1] per channel,
    a 0-dim tensor per layer."""
    return stat.reshape(()) if spec.granularity == "layer" else stat


def _check_weight(w: torch.Tensor, spec: WeightQuant) -> None:
    if not w.is_floating_point() or w.dim() == 0 or w.numel() == 0:
        raise DataError("weight", f"must be a non-empty floating-point tensor, got {w.dtype} of shape {tuple(w.shape)}")
    if spec.granularity == "channel" and w.dim() < 2:
        raise DataError("weight", "per-channel scales need a weight with an output dimension and at least one more")


def scale_shape(w: torch.Tensor, spec: WeightQuant) -> tuple[int, ...]:
    """The shape of ``w``'s scales: () per layer, (out, 1, …, 1) per channel."""
    return () if spec.granularity == "layer" else (w.shape[0],) + (1,) * (w.dim() - 1)


@torch.no_grad()
def lsq_initial_step(w: torch.Tensor, spec: WeightQuant) -> torch.Tensor:
    """LSQ's starting step s₀ = 2·mean|w|/√M (M = spec.max_code; the mean over the layer or
    each output channel), computed in float64 and rounded once to w's dtype, shaped as
    :func:`scale_shape`. ``DataError('weight')`` when a mean is 0 (an all-zero layer or
    output channel has no step to start from)."""
    _check_weight(w, spec)
    mean = w.detach().to(torch.float64).abs().mean(_reduce_dims(w, spec), keepdim=True)
    if not bool((mean > 0).all()):
        raise DataError("weight", "LSQ starts its step at 2·mean|w|/√M: an all-zero "
                                  f"{'output channel' if spec.granularity == 'channel' else 'layer'} has none")
    return _shape(2.0 * mean / math.sqrt(spec.max_code), spec).to(w.dtype)


@torch.no_grad()
def weight_codes(w: torch.Tensor, spec: WeightQuant, step: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scales) of ``w`` under ``spec``: int8 codes with |c| ≤ spec.max_code and
    scales in w's dtype, shaped [out, 1, …, 1] (channel) or [] (layer), so that
    Q(w) = scales·codes (module docstring for each kind's formula).

    ``step``: the learned step s of an ``lsq`` spec (required there, refused otherwise),
    shaped as :func:`scale_shape`, finite and nonzero (else ``DataError('step')``); the scales
    are |s| in w's dtype (the forward is even in s) and the codes clip(round_half_even(w/s), −M, M) with w/s in w's dtype."""
    codes, scales = _codes(w, spec, step)
    return codes.to(torch.int8), _shape(scales.to(w.dtype), spec)


def project(w: torch.Tensor, spec: WeightQuant, step: torch.Tensor | None = None) -> torch.Tensor:
    """Q(w) = scales·codes in w's dtype (no gradient; see :func:`weight_codes`)."""
    codes, scales = _codes(w, spec, step)
    if codes.dtype != w.dtype:
        codes, scales = codes.to(w.dtype), scales.to(w.dtype)
    return _shape(scales, spec) * codes


@torch.no_grad()
def _codes(w: torch.Tensor, spec: WeightQuant, step: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scales) with the codes as floats (integer values, float32 or float64: the
    working precision of the module docstring; w's dtype for a learned step) and the scales
    in w's dtype, converted to that precision, with keepdim shape: what :func:`weight_codes`
    and :func:`project` share."""
    _check_weight(w, spec)
    if (step is not None) != (spec.step == "lsq"):
        raise ConfigError("step", f"a {spec.step!r} spec {'needs' if step is None else 'takes no'} learned step tensor")
    if step is not None:
        if tuple(step.shape) != scale_shape(w, spec):
            raise DataError("step", f"must have shape {list(scale_shape(w, spec))}, got {list(step.shape)}")
        s = step.detach().to(w.dtype)
        if not bool(torch.isfinite(s).all() and (s != 0).all()):
            raise DataError("step", "a learned step must be finite and nonzero")
        # s·clip(⌊w/s⌉, −M, M) is even in s (w/(−s) = −(w/s) exactly; ⌊·⌉ half-even and the
        # symmetric clip are odd): a step trained below 0 (nothing keeps it positive) acts as |s|
        s = s.abs()
        _, codes = lsq_levels(w.detach(), s, -spec.max_code, spec.max_code)
        return codes, s
    dims = _reduce_dims(w, spec)
    work = torch.float64 if w.dtype == torch.float64 else torch.float32
    x = w.detach().to(work)
    if spec.kind == "uniform":
        return _uniform_codes(x, w.dtype, spec.max_code, dims)
    a64 = x.abs().to(torch.float64)  # |w| exactly; the sums below in float64
    if spec.kind == "binary":
        scale64 = a64.mean(dims, keepdim=True)
        codes = torch.where(x >= 0, 1.0, -1.0).to(work)
    else:
        delta = TERNARY_RATIO * a64.mean(dims, keepdim=True)
        keep = a64 > delta
        count = keep.sum(dims, keepdim=True)
        total = torch.where(keep, a64, 0.0).sum(dims, keepdim=True)
        scale64 = torch.where(count > 0, total / count.clamp(min=1), 0.0)
        codes = torch.where(keep, torch.sign(x), 0.0)
    return codes, scale64.to(w.dtype).to(work)


def _uniform_codes(x: torch.Tensor, dtype: torch.dtype, m: int, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform codes clip(round_half_even(w/s), −M, M) and s = max|w|/M rounded to ``dtype``,
    for ``x`` = w in the working precision (float32 or float64; module docstring)."""
    scale = (x.abs().amax(dims, keepdim=True) / m).to(dtype).to(x.dtype)
    ratio = x / torch.where(scale > 0, scale, 1.0)  # all-zero slices: 0/1 = 0, code 0
    codes = torch.round(ratio)
    if x.dtype != torch.float64:
        # round(fl32(w/s)) ≠ round(fl64(w/s)) only where fl32(w/s) is a half-integer
        ties = ratio.sub_(codes).abs_() == 0.5
        if bool(ties.any()):
            where = ties.nonzero(as_tuple=True)
            exact = x[where].double() / scale.expand_as(x)[where].double()
            codes[where] = torch.round(exact).to(x.dtype)
    return codes.clamp_(-m, m), scale
