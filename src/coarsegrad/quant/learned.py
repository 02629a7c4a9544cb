"""Learned quantizer steps: LSQ (a learned step size) and PACT (a learned clipping level).

LSQ — Esser, McKinley, Bablani, Appuswamy & Modha, "Learned Step Size Quantization",
ICLR 2020 (arXiv 1902.08153). With v = x/s and integer bounds q_n < q_p::

    forward   y = s·clip(⌊v⌉, q_n, q_p)                 ⌊·⌉ rounds half to even (torch.round)
    ∂y/∂x     = 1{q_n ≤ v ≤ q_p}                         (straight through the rounding)
    ∂y/∂s     = g·( ⌊v⌉ − v   if q_n < v < q_p            (the paper's Eq. 3)
                    q_n       if v ≤ q_n
                    q_p       if v ≥ q_p )

with the gradient scale g = 1/√(N·q_p) (:func:`lsq_grad_scale`), N the number of
elements that share the step (a weight tensor's per-channel slice; an activation's
features per example). The step may be a scalar or per channel (any shape that
broadcasts against x); its gradient is summed over the broadcast dimensions. At v = q_p
exactly ∂y/∂x = 1 and ∂y/∂s = q_p (x's interval is closed as in the reference code's
clamp; s's case split is the paper's).

PACT — Choi, Wang, Venkataramani, Chuang, Srinivasan & Gopalakrishnan, "PACT:
Parameterized Clipping Activation for Quantized Neural Networks", arXiv 1805.06085
(2018). With L = 2^b − 1 and the clipping level a > 0::

    forward   y = clip(x, 0, a),   y_q = ⌊y·L/a⌉·a/L       ⌊·⌉ half to even
    ∂y_q/∂x   = 1{0 < x < a}                              (STE through the rounding)
    ∂y_q/∂a   = 1{x ≥ a}                                  (the paper's Eq. 3)

This is the paper's published rule: the rounding is passed straight through for a as
well, so the term (⌊y·L/a⌉ − y·L/a)/L inside (0, a) is dropped.

Neither function checks s > 0 or a > 0 per call (a host sync per step); the modules
that hold them start from a validated spec α (:class:`coarsegrad.quant.autograd.QuantReLU`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from coarsegrad.errors import ConfigError


def lsq_grad_scale(numel: int, qp: int) -> float:
    """g = 1/√(N·q_p), LSQ's step-gradient scale for N elements per step (N ≥ 1, q_p ≥ 1)."""
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 1:
        raise ConfigError("numel", f"must be an int ≥ 1, got {numel!r}")
    if isinstance(qp, bool) or not isinstance(qp, int) or qp < 1:
        raise ConfigError("qp", f"must be an int ≥ 1, got {qp!r}")
    return 1.0 / math.sqrt(numel * qp)


def _check_bounds(qn: int, qp: int) -> None:
    for name, value in (("qn", qn), ("qp", qp)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"must be an int, got {value!r}")
    if not qn < qp:
        raise ConfigError("qp", f"must be greater than qn, got qn={qn}, qp={qp}")


def _reduce_to(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``grad`` summed over the dimensions ``like`` was broadcast along."""
    if grad.shape == like.shape:
        return grad
    return grad.sum_to_size(like.shape) if like.dim() else grad.sum()


def lsq_levels(x: torch.Tensor, step: torch.Tensor, qn: int, qp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(v, c): v = x/s and the integer levels c = clip(⌊v⌉, q_n, q_p) (half to even) in x's
    dtype: LSQ's forward is s·c (the one rounding of x/s, also for the codes of weights)."""
    v = x / step
    return v, torch.round(v).clamp_(qn, qp)


class LSQFunction(torch.autograd.Function):
    """y = s·clip(⌊x/s⌉, q_n, q_p) with LSQ's ∂y/∂x and ∂y/∂s (module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, step: torch.Tensor, qn: int, qp: int,
                grad_scale: float) -> torch.Tensor:
        v, levels = lsq_levels(x, step, qn, qp)
        ctx.save_for_backward(v, step)
        ctx.bounds = (qn, qp, grad_scale)
        return levels.mul_(step)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                          None, None, None]:
        v, step = ctx.saved_tensors
        qn, qp, grad_scale = ctx.bounds
        grad_x = grad_step = None
        if ctx.needs_input_grad[0]:
            grad_x = grad * ((v >= qn) & (v <= qp)).to(grad.dtype)
        if ctx.needs_input_grad[1]:
            inner = torch.round(v) - v
            dstep = torch.where(v <= qn, torch.full_like(v, qn), torch.where(v >= qp, torch.full_like(v, qp), inner))
            grad_step = _reduce_to(grad * dstep * grad_scale, step)
        return grad_x, grad_step, None, None, None


def lsq_quantize(x: torch.Tensor, step: torch.Tensor, qn: int, qp: int,
                 grad_scale: float) -> torch.Tensor:
    """LSQ fake quantization s·clip(⌊x/s⌉, q_n, q_p) with LSQ's gradients (module docstring).

    ``step`` is a tensor broadcastable against ``x`` (a scalar or per channel, e.g. shape
    (C, 1) for a (C, K) weight); ``grad_scale`` is g, usually :func:`lsq_grad_scale`.
    """
    _check_bounds(qn, qp)
    out: torch.Tensor = LSQFunction.apply(x, step, qn, qp, float(grad_scale))  # type: ignore[no-untyped-call]
    return out


class PACTFunction(torch.autograd.Function):
    """y_q = ⌊clip(x, 0, a)·L/a⌉·a/L with PACT's ∂y_q/∂x = 1{0 < x < a}, ∂y_q/∂a = 1{x ≥ a}."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, clip: torch.Tensor, levels: int) -> torch.Tensor:
        ctx.save_for_backward(x, clip)
        y = torch.minimum(x.clamp(min=0), clip)
        return torch.round(y * (levels / clip)).mul_(clip / levels)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, clip = ctx.saved_tensors
        grad_x = grad_clip = None
        if ctx.needs_input_grad[0]:
            grad_x = grad * ((x > 0) & (x < clip)).to(grad.dtype)
        if ctx.needs_input_grad[1]:
            grad_clip = _reduce_to(grad * (x >= clip).to(grad.dtype), clip)
        return grad_x, grad_clip, None


def pact_quantize(x: torch.Tensor, clip: torch.Tensor, levels: int) -> torch.Tensor:
    """PACT: ⌊clip(x, 0, a)·L/a⌉·a/L with a = ``clip`` (a tensor broadcastable against
    ``x``) and L = ``levels`` = 2^b − 1 ≥ 1; gradients as in the module docstring."""
    _check_bounds(0, levels)
    out: torch.Tensor = PACTFunction.apply(x, clip, levels)  # type: ignore[no-untyped-call]
    return out
