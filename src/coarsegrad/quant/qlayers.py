"""Layers with quantized weights: :class:`QuantLinear` and :class:`QuantConv2d`.

Each keeps the float latent weight w (``weight``, the parameter the optimizer updates)
and its :class:`~coarsegrad.quant.weight_spec.WeightQuant` (``weight_quant``), and uses
in its forward the effective weight of the spec's method (Q from
:mod:`coarsegrad.quant.weights`)::

    ste, bcgd       ŵ = Q(w)                                   ∂L/∂w = ∂L/∂ŵ [· 1{|w| ≤ clip}, ste with clip]
    binaryrelax     ŵ = (λ·Q(u) + u)/(λ + 1)  (relaxed phase)   ∂L/∂u = ∂L/∂ŵ
                    ŵ = Q(u)                   (hard phase, and always in eval mode)
    ste, step lsq   ŵ = s·clip(⌊w/s⌉, −M, M)                   LSQ's ∂ŵ/∂w and ∂ŵ/∂s, g = 1/√(N·M)

With ``step="lsq"`` the layer also holds the learned step s (``weight_step``, an
nn.Parameter of shape [] per layer or [out, 1, …, 1] per channel, in the weight's dtype)
starting at s₀ = 2·mean|w|/√M of the weights it is made with (``from_float``: the copied
ones); N = the weights sharing one step. The forward is
:func:`~coarsegrad.quant.learned.lsq_quantize` in w's dtype; it equals Q(w) = scales·codes
of :func:`~coarsegrad.quant.weights.weight_codes` exactly (both take w/s in w's dtype).
The step is not kept positive per step (no host sync); the forward is even in s, so a
step trained below zero acts as |s| (and exports so); a zero step raises ``DataError('step')``.

The gradient goes straight through the projection (and the blend) to the latent weight:
BCGD's g(Q(w)) and BinaryRelax's ∇f(w̃) are gradients at the effective weight applied to
the latent one. λ (``relax_lambda``, float64) and the phase (``relax_hard``, bool) are
buffers, so they are in the state_dict and checkpoints; the per-step rules that move them
and the latent weights are in :mod:`coarsegrad.training.weight_methods`. In eval mode the
forward always uses Q(w): evaluation sees the weights that are deployed. The bias stays
float (it is added to the integer accumulator at deployment in full precision).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from coarsegrad.errors import ConfigError
from coarsegrad.quant.learned import lsq_grad_scale, lsq_quantize
from coarsegrad.quant.weight_spec import WeightQuant
from coarsegrad.quant.weights import lsq_initial_step, project, weight_codes


class _MaskedStraightThrough(torch.autograd.Function):
    """Forward ŵ (given); backward ∂L/∂w = ∂L/∂ŵ · 1{|w| ≤ clip} (BinaryConnect's
    hard-tanh STE; a weight exactly at ±clip keeps its gradient)."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, w_hat: torch.Tensor, clip: float) -> torch.Tensor:
        ctx.save_for_backward(w.abs() <= clip)
        return w_hat

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None


def lsq_weight(w: torch.Tensor, step: torch.Tensor, spec: WeightQuant) -> torch.Tensor:
    """s·clip(⌊w/s⌉, −M, M) with LSQ's gradients to w and s (grad scale 1/√(N·M), N the
    weights per step), in w's dtype."""
    m = spec.max_code
    n = w.numel() if spec.granularity == "layer" else w[0].numel()
    return lsq_quantize(w, step.to(w.dtype), -m, m, lsq_grad_scale(n, m))


def effective_weight(w: torch.Tensor, spec: WeightQuant, relax_lambda: torch.Tensor,
                     relax_hard: torch.Tensor, training: bool, step: torch.Tensor | None = None,
                     q: torch.Tensor | None = None) -> torch.Tensor:
    """ŵ of the module docstring for latent ``w`` (and the learned ``step`` of an lsq
    spec), with the straight-through gradient; ``q``: Q(w) when the caller has it."""
    if step is not None:
        return lsq_weight(w, step, spec)
    q = project(w, spec) if q is None else q
    if spec.method == "ste" and spec.clip is not None:
        out: torch.Tensor = _MaskedStraightThrough.apply(w, q, spec.clip)  # type: ignore[no-untyped-call]
        return out
    if spec.method == "binaryrelax" and training:
        # (λQ + u)/(λ + 1) = lerp(u, Q, c), c = λ/(λ + 1); c = 1 (hard phase) gives Q exactly
        lam = relax_lambda.to(w.dtype)
        c = torch.where(relax_hard, torch.ones_like(lam), lam / (lam + 1))
        q = torch.lerp(w.detach(), q, c)
    return w + (q - w).detach()


def _check_spec(spec: object) -> WeightQuant:
    """``spec`` if it is a WeightQuant."""
    if not isinstance(spec, WeightQuant):
        raise ConfigError("weight_quant", f"must be a WeightQuant, got {type(spec).__name__}")
    return spec


class _QuantWeights(nn.Module):
    """What :class:`QuantLinear` and :class:`QuantConv2d` share (listed first in their bases,
    before the torch layer): the spec, the BinaryRelax buffers, the learned step (lsq),
    Q(w) and the forward's ŵ."""

    weight: torch.Tensor
    weight_quant: WeightQuant
    relax_lambda: torch.Tensor
    relax_hard: torch.Tensor
    weight_step: nn.Parameter | None
    _kept_projection: tuple[int, int, torch.Tensor] | None = None  # (version, data_ptr, Q(w)) of a BCGD forward

    def _set_weight_quant(self, spec: object) -> None:
        """Hold ``spec``, the BinaryRelax buffers at the start (λ = lam0 in float64, hard iff
        ``hard_after`` is 0) and, for an lsq spec, the step s₀ of the current weights (call
        after the torch layer's __init__)."""
        self.weight_quant = _check_spec(spec)
        device = self.weight.device
        self.register_buffer("relax_lambda", torch.tensor(self.weight_quant.lam0, dtype=torch.float64, device=device))
        self.register_buffer("relax_hard", torch.tensor(self.weight_quant.hard_after == 0, device=device))
        lsq = self.weight_quant.step == "lsq"
        self.register_parameter("weight_step", nn.Parameter(lsq_initial_step(self.weight, self.weight_quant)) if lsq else None)

    def _copy_float(self, layer: nn.Linear | nn.Conv2d) -> None:
        """Copy ``layer``'s weight (the latent w) and bias into this layer; an lsq step
        starts again at s₀ of the copied weights."""
        with torch.no_grad():
            self.weight.copy_(layer.weight)
            bias = getattr(self, "bias", None)
            if layer.bias is not None and bias is not None:
                bias.copy_(layer.bias)
            if self.weight_step is not None:
                self.weight_step.copy_(lsq_initial_step(self.weight, self.weight_quant))

    def codes_and_scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 codes, scales) of the deployed weight, Q(w) = scales·codes
        (:func:`~coarsegrad.quant.weights.weight_codes`; an lsq layer's scales are its step)."""
        return weight_codes(self.weight, self.weight_quant, self.weight_step)

    def quantized_weight(self) -> torch.Tensor:
        """Q(w): the deployed weight (no gradient)."""
        return project(self.weight, self.weight_quant, self.weight_step)

    def blend_projection(self) -> torch.Tensor:
        """Q(w) for BCGD's blend after the step: the last forward's when w has not changed
        since (same version counter and storage; a write through ``.data`` is not seen),
        else computed; used once."""
        kept, self._kept_projection = self._kept_projection, None
        if kept is not None and kept[:2] == (self.weight._version, self.weight.data_ptr()):
            return kept[2]
        return self.quantized_weight()

    def _effective_weight(self) -> torch.Tensor:
        q = None
        if self.weight_quant.method == "bcgd":  # the blend needs Q(w_t) again: keep it (blend_projection)
            q = self.quantized_weight()
            self._kept_projection = (self.weight._version, self.weight.data_ptr(), q)
        return effective_weight(self.weight, self.weight_quant, self.relax_lambda, self.relax_hard, self.training,
                                self.weight_step, q)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_quant=({self.weight_quant.describe()})"


class QuantLinear(_QuantWeights, nn.Linear):
    """nn.Linear whose forward uses the effective weight ŵ of ``weight_quant`` (module doc)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 weight_quant: WeightQuant, device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._set_weight_quant(weight_quant)

    @classmethod
    def from_float(cls, linear: nn.Linear, spec: WeightQuant) -> QuantLinear:
        """A QuantLinear with ``linear``'s shape, device, dtype and a copy of its weight
        (the latent w) and bias."""
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    weight_quant=spec, device=w.device, dtype=w.dtype)
        layer._copy_float(linear)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._effective_weight(), self.bias)


class QuantConv2d(_QuantWeights, nn.Conv2d):
    """nn.Conv2d whose forward uses the effective weight ŵ of ``weight_quant`` (module doc);
    per-channel scales are per output channel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: Any = "zeros", *, weight_quant: WeightQuant, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self._set_weight_quant(weight_quant)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, spec: WeightQuant) -> QuantConv2d:
        """A QuantConv2d with ``conv``'s geometry, device, dtype and a copy of its weight
        (the latent w) and bias."""
        w = conv.weight
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                    weight_quant=spec, device=w.device, dtype=w.dtype)
        layer._copy_float(conv)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self._conv_forward(x, self._effective_weight(), self.bias)
        return out


QUANT_LAYERS = (QuantLinear, QuantConv2d)
"""The layer types :class:`~coarsegrad.training.weight_methods.WeightMethods` looks for."""


def quantize_weights(module: nn.Module, spec: WeightQuant) -> nn.Module:
    """``module`` with every plain nn.Linear / nn.Conv2d (not a subclass) below it replaced,
    in place, by :class:`QuantLinear` / :class:`QuantConv2d` ``.from_float(layer, spec)``;
    returns ``module`` (itself replaced when it is such a layer)."""
    if type(module) is nn.Linear:
        return QuantLinear.from_float(module, spec)
    if type(module) is nn.Conv2d:
        return QuantConv2d.from_float(module, spec)
    for name, child in module.named_children():
        setattr(module, name, quantize_weights(child, spec))
    return module


def weight_spec_of(model: nn.Module) -> WeightQuant | None:
    """The one WeightQuant every quantized-weight layer of ``model`` holds, None when it
    has none; ``ConfigError('model')`` when its layers hold different specs."""
    specs = {m.weight_quant for m in model.modules() if isinstance(m, QUANT_LAYERS)}
    if len(specs) > 1:
        raise ConfigError("model", f"its quantized-weight layers hold {len(specs)} different WeightQuant specs")
    return next(iter(specs), None)
