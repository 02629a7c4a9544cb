"""Baselines for :mod:`coarsegrad.bench.epoch`: the plain PyTorch training loop and the
activations it is timed with (float ReLU, two textbook STEs, Brevitas), and Brevitas'
fully quantized MLP for :mod:`coarsegrad.bench.full_quant`.

Textbook STEs for the b-bit staircase σ(x) = α·clip(⌈x/α⌉, 0, L), clipped-ReLU μ′ =
1{0 < x ≤ q}, q = Lα (no boundary correction: these are what users write by hand):

* ``function``: an ``autograd.Function`` saving the bool mask, backward grad·mask;
* ``detach``: y = clip(x, 0, q) + (σ(x) − clip(x, 0, q)).detach().
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from coarsegrad.models.networks import make_linear


class _TextbookSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: float, levels: int) -> torch.Tensor:
        ctx.save_for_backward((x > 0) & (x <= levels * alpha))
        return torch.clamp(torch.ceil(x / alpha), 0, levels) * alpha

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None


class TextbookQuantReLU(nn.Module):
    """σ with a clipped-ReLU STE, ``kind`` ``function`` or ``detach`` (module docstring)."""

    def __init__(self, bits: int, alpha: float, kind: str) -> None:
        super().__init__()
        if kind not in ("function", "detach"):
            raise ValueError(f"kind must be 'function' or 'detach', got {kind!r}")
        self.alpha, self.levels, self.kind = alpha, 2**bits - 1, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "function":
            return _TextbookSTE.apply(x, self.alpha, self.levels)
        clipped = torch.clamp(x, 0.0, self.levels * self.alpha)
        quantized = torch.clamp(torch.ceil(x / self.alpha), 0, self.levels) * self.alpha
        return clipped + (quantized - clipped).detach()


def float_model(features: int, hidden: int, classes: int, seed: int,
                act: nn.Module | None = None) -> nn.Sequential:
    """``Linear → act → Linear`` (act defaults to ``nn.ReLU``), initialised from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return nn.Sequential(make_linear(features, hidden, gen), act if act is not None else nn.ReLU(),
                         make_linear(hidden, classes, gen))


def ste_model(features: int, hidden: int, classes: int, bits: int, alpha: float, kind: str,
              seed: int) -> nn.Sequential:
    """:func:`float_model` with a :class:`TextbookQuantReLU`."""
    return float_model(features, hidden, classes, seed, TextbookQuantReLU(bits, alpha, kind))


def brevitas_relu(bits: int) -> nn.Module | None:
    """``brevitas.nn.QuantReLU(bit_width=bits)``, or None when Brevitas is not installed."""
    try:
        import brevitas.nn as qnn
    except ImportError:
        return None
    return qnn.QuantReLU(bit_width=bits)


def brevitas_quant_mlp(features: int, hidden: int, classes: int, seed: int, weight_bits: int,
                       act_bits: int, per_channel: bool) -> nn.Module | None:
    """:func:`float_model`'s network (the same initial weights) as ``brevitas.nn.QuantLinear
    (weight_bit_width=weight_bits)`` → ``QuantReLU(bit_width=act_bits)`` → ``QuantLinear``:
    Brevitas' default weight quantizer, s = max|w|/(2^{b−1} − 1) per tensor
    (``Int8WeightPerTensorFloat``) or per output channel (``Int8WeightPerChannelFloat``),
    codes round(w/s) in ±(2^{b−1} − 1); None when Brevitas is not installed."""
    try:
        import brevitas.nn as qnn
        from brevitas.quant import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat
    except ImportError:
        return None
    weight_quant = Int8WeightPerChannelFloat if per_channel else Int8WeightPerTensorFloat
    float_net = float_model(features, hidden, classes, seed)
    layers: list[nn.Module] = []
    for layer in float_net:
        if isinstance(layer, nn.Linear):
            quant = qnn.QuantLinear(layer.in_features, layer.out_features, bias=True,
                                    weight_quant=weight_quant, weight_bit_width=weight_bits)
            with torch.no_grad():
                quant.weight.copy_(layer.weight)
                quant.bias.copy_(layer.bias)
            layers.append(quant)
        else:
            layers.append(qnn.QuantReLU(bit_width=act_bits))
    return nn.Sequential(*layers)


def brevitas_quant_lenet(classes: int, weight_bits: int, act_bits: int, per_channel: bool,
                         channels: tuple[int, int] = (20, 50), hidden: int = 500) -> nn.Module | None:
    """LeNet-5 as :class:`coarsegrad.LeNet5` (5×5 convs, affine-free batch-norm before each
    activation, 2×2 max-pools) in Brevitas: ``QuantConv2d``/``QuantLinear(weight_bit_width=
    weight_bits)`` and ``QuantReLU(bit_width=act_bits)``, weights quantized per tensor or per
    output channel (as :func:`brevitas_quant_mlp`); input [N, 784]. None without Brevitas."""
    try:
        import brevitas.nn as qnn
        from brevitas.quant import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat
    except ImportError:
        return None
    wq = {"weight_quant": Int8WeightPerChannelFloat if per_channel else Int8WeightPerTensorFloat,
          "weight_bit_width": weight_bits}
    c1, c2 = channels
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        qnn.QuantConv2d(1, c1, 5, **wq), nn.BatchNorm2d(c1, affine=False), qnn.QuantReLU(bit_width=act_bits),
        nn.MaxPool2d(2),
        qnn.QuantConv2d(c1, c2, 5, **wq), nn.BatchNorm2d(c2, affine=False), qnn.QuantReLU(bit_width=act_bits),
        nn.MaxPool2d(2), nn.Flatten(),
        qnn.QuantLinear(16 * c2, hidden, bias=True, **wq), nn.BatchNorm1d(hidden, affine=False),
        qnn.QuantReLU(bit_width=act_bits), qnn.QuantLinear(hidden, classes, bias=True, **wq))


class PlainEpoch:
    """One epoch of the plain PyTorch loop per call; returns its seconds.

    Per epoch a permutation; per batch ``X[idx]``, forward, ``F.cross_entropy``,
    ``zero_grad``, ``backward``, ``torch.optim.SGD`` (momentum 0.9) step.
    """

    def __init__(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch: int,
                 lr: float, seed: int) -> None:
        self.model, self.X, self.y, self.batch = model, X, y, batch
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self) -> float:
        model, X, y, optimizer = self.model, self.X, self.y, self.optimizer
        start = time.perf_counter()
        order = torch.randperm(X.shape[0], generator=self.generator)
        for i in range(0, X.shape[0], self.batch):
            idx = order[i:i + self.batch]
            loss = F.cross_entropy(model(X[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start
