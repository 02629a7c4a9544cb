"""The coarse-gradient activation: forward σ (staircase), backward grad · μ′(x).

Every layer carries its :class:`~coarsegrad.quant.spec.ActQuant` whole (bits, α, STE,
rounding), never module globals, so layers with different settings never share them.
Forward and backward run the kernels of :mod:`coarsegrad.quant.kernels`, the same ones
the fast training step uses. The functions and modules also accept the older
(bits, alpha, ste) arguments, which only build an ActQuant.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from coarsegrad.quant.kernels import EagerQuantizer, codes
from coarsegrad.quant.learned import lsq_grad_scale, lsq_quantize, pact_quantize
from coarsegrad.quant.spec import ActQuant, as_quant
from coarsegrad.quant.staircase import DEFAULT_ROUNDING, Rounding
from coarsegrad.quant.ste import STE


def staircase_codes(x: torch.Tensor, quant: ActQuant | int, alpha: float | None = None,
                    rounding: Rounding = DEFAULT_ROUNDING) -> torch.Tensor:
    """Integer codes c(x) = #{j ∈ 0..L−1 : x > t_j} ∈ {0..L}, as ``x``'s dtype.

    The thresholds are the floats t_j = fl((j + o)·α) of ``x``'s dtype, so for ``ceil``
    σ(fl(kα)) = fl(kα) exactly (⌈x/α⌉ taken literally can be one off there).
    """
    return codes(x, as_quant(quant, alpha, rounding=rounding))


def staircase(x: torch.Tensor, quant: ActQuant | int, alpha: float | None = None,
              rounding: Rounding = DEFAULT_ROUNDING) -> torch.Tensor:
    """σ(x) = α·c(x) (for ``ceil``: α·clip(⌈x/α⌉, 0, 2^b − 1), exact at every boundary).

    Not differentiable (its derivative is 0 almost everywhere); use
    :func:`quantized_relu` for training with a straight-through estimator.
    """
    spec = as_quant(quant, alpha, rounding=rounding)
    return codes(x, spec).mul_(spec.alpha)


class StaircaseSTEFunction(torch.autograd.Function):
    """y = σ(x) = α·c(x);  ∂L/∂x := ∂L/∂y · μ′(x; q_max).

    Keeps x for the STEs with a fused backward kernel (identity, 1{x > 0}, 1{0 < x ≤ q}),
    else m: a bool mask (one byte per element) for other indicator STEs, μ′(x) otherwise.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, quant: ActQuant) -> torch.Tensor:
        kernel = EagerQuantizer(quant, x.dtype, x.device, inplace=False)
        out = torch.empty_like(x)
        factor = kernel.forward(x, out, torch.empty_like(x), need_factor=ctx.needs_input_grad[0])
        ctx.kernel = kernel
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x if factor is None else factor)
        return out.mul_(quant.alpha)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        (saved,) = ctx.saved_tensors
        return ctx.kernel.grad_input(grad, saved), None


def quantized_relu(x: torch.Tensor, quant: ActQuant | int = 2, alpha: float | None = None,
                   ste: str | STE = "clipped_relu", rounding: Rounding = DEFAULT_ROUNDING) -> torch.Tensor:
    """σ(x) with the coarse gradient of ``quant`` (an :class:`ActQuant`, or its bits with
    alpha/ste/rounding)."""
    out: torch.Tensor = StaircaseSTEFunction.apply(x, as_quant(quant, alpha, ste, rounding))  # type: ignore[no-untyped-call]
    return out


class QuantReLU(nn.Module):
    """Module form of :func:`quantized_relu`; holds its :class:`ActQuant` as ``quant``.

    With ``quant.learn`` set it also holds the learned parameter, saved in its state_dict
    (``quant.alpha`` stays the starting value): ``"lsq"`` → ``step`` s (initially α),
    y = :func:`~coarsegrad.quant.learned.lsq_quantize` (x, s, 0, L, 1/√(N·L)), N = the
    features of one example (x[0].numel()); ``"pact"`` → ``clip`` a (initially L·α),
    y = :func:`~coarsegrad.quant.learned.pact_quantize` (x, a, L). At the start both equal
    the nearest staircase of α, except ties x = (k + ½)α, which round half to even.
    """

    step: nn.Parameter
    clip: nn.Parameter

    def __init__(self, quant: ActQuant | int = 2, alpha: float | None = None,
                 ste: str | STE = "clipped_relu", rounding: Rounding = DEFAULT_ROUNDING) -> None:
        super().__init__()
        self.quant = as_quant(quant, alpha, ste, rounding)
        if self.quant.learn == "lsq":
            self.step = nn.Parameter(torch.tensor(self.quant.alpha))
        elif self.quant.learn == "pact":
            self.clip = nn.Parameter(torch.tensor(self.quant.q_max))

    @property
    def bits(self) -> int:
        return self.quant.bits

    @property
    def alpha(self) -> float:
        return self.quant.alpha

    @property
    def ste(self) -> STE:
        return self.quant.ste

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        learn, levels = self.quant.learn, self.quant.levels
        if learn == "lsq":
            return lsq_quantize(x, self.step, 0, levels, lsq_grad_scale(max(x[0].numel(), 1), levels))
        if learn == "pact":
            return pact_quantize(x, self.clip, levels)
        out: torch.Tensor = StaircaseSTEFunction.apply(x, self.quant)  # type: ignore[no-untyped-call]
        return out

    def extra_repr(self) -> str:
        return self.quant.describe()

