"""The coarse-gradient activation: forward σ (staircase), backward grad · μ′(x).

The bits, alpha and STE of each activation live on the call (or on the
:class:`QuantReLU` module that makes the call), never in module globals, so layers
with different settings never share them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from coarsegrad.quant.staircase import check_alpha, check_bits, optimal_alpha, staircase
from coarsegrad.quant.ste import STE, get_ste


class StaircaseSTEFunction(torch.autograd.Function):
    """y = σ(x) = α·clip(⌈x/α⌉, 0, 2^b − 1);  ∂L/∂x := ∂L/∂y · μ′(x).

    For indicator STEs (μ′ ∈ {0, 1}) backward keeps a boolean mask (one byte per
    element); otherwise it keeps x.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bits: int, alpha: float, ste: STE) -> torch.Tensor:
        ctx.bits, ctx.alpha, ctx.ste = bits, alpha, ste
        ctx.use_mask = ste.indicator is not None
        if ctx.needs_input_grad[0]:
            if ctx.use_mask:
                ctx.save_for_backward(ste.indicator(x, (2**bits - 1) * alpha))
            else:
                ctx.save_for_backward(x)
        return staircase(x, bits, alpha)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (saved,) = ctx.saved_tensors
        if ctx.use_mask:
            return grad * saved, None, None, None
        return grad * ctx.ste.dmu(saved, ctx.bits, ctx.alpha), None, None, None


def quantized_relu(
    x: torch.Tensor, bits: int, alpha: float | None = None, ste: str | STE = "clipped_relu"
) -> torch.Tensor:
    """σ(x) with the coarse gradient of ``ste`` (a name or an :class:`STE`).

    ``alpha=None`` uses :func:`optimal_alpha(bits) <coarsegrad.optimal_alpha>`.
    """
    bits = check_bits(bits)
    alpha = optimal_alpha(bits) if alpha is None else check_alpha(alpha)
    return StaircaseSTEFunction.apply(x, bits, alpha, get_ste(ste))


class QuantReLU(nn.Module):
    """Module form of :func:`quantized_relu`; holds its own bits, alpha and STE."""

    def __init__(
        self, bits: int = 2, alpha: float | None = None, ste: str | STE = "clipped_relu"
    ) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.alpha = optimal_alpha(self.bits) if alpha is None else check_alpha(alpha)
        self.ste = get_ste(ste)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return StaircaseSTEFunction.apply(x, self.bits, self.alpha, self.ste)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, alpha={self.alpha:.6g}, ste={self.ste.name}"


def quantize_model(
    model: nn.Module, bits: int, alpha: float | None = None, ste: str | STE = "clipped_relu"
) -> nn.Module:
    """Replace every ``nn.ReLU`` submodule of ``model`` (in place) by a :class:`QuantReLU`.

    Returns ``model``. Functional ``torch.relu`` calls inside ``forward`` are not
    modules and are left alone.
    """
    bits = check_bits(bits)
    alpha = optimal_alpha(bits) if alpha is None else check_alpha(alpha)
    ste = get_ste(ste)
    for name, child in list(model.named_children()):
        if isinstance(child, nn.ReLU):
            setattr(model, name, QuantReLU(bits, alpha, ste))
        else:
            quantize_model(child, bits, alpha, ste)
    return model
