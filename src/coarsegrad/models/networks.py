"""Networks with quantized activations.

* :class:`TwoLayerNet` — the paper's network o = V·σ(Wx): K classes, m hidden units
  per class (K·m units, unit u = k·m + j belongs to class k), no biases. V either sums
  each class's units (a fixed block of ones) or is trained.
* :class:`MLP` — in → hidden → classes, optional batch-norm without affine before σ.

Each takes its activation as one :class:`~coarsegrad.quant.spec.ActQuant` (``quant=``);
the older ``bits``/``alpha``/``ste`` arguments only build one. ``quant=None`` (or, without
``quant``, ``bits=None``) is the float baseline: plain ReLU for σ. :class:`TwoLayerNet` and
:class:`MLP` say themselves whether the fast training step can run them
(:meth:`~MLP.two_layer_form`): only when their own forward computes
o = α·c(x W₁ᵀ + b₁) W₂ᵀ + b₂ — a subclass that overrides ``forward`` does not.

Every constructor takes an optional ``torch.Generator`` for its initial weights and
never touches the global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import nn

from coarsegrad.errors import ConfigError
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.spec import ActQuant, as_quant
from coarsegrad.quant.ste import STE
from coarsegrad.validate import integer, number


@dataclass(frozen=True)
class TwoLayerForm:
    """The tensors of o = α·c(x W₁ᵀ + b₁) W₂ᵀ + b₂ (b₁, b₂ None when absent): what the
    fast step (:mod:`coarsegrad.training.fast`) needs from a model."""

    w1: torch.Tensor
    b1: torch.Tensor | None
    w2: torch.Tensor
    b2: torch.Tensor | None
    quant: ActQuant


def _plain(module: nn.Module, cls: type[nn.Module]) -> bool:
    """True when ``module`` is a ``cls`` whose forward is ``cls.forward`` (no override)."""
    return isinstance(module, cls) and type(module).forward is cls.forward


def _fixed_act(module: nn.Module) -> bool:
    """True for a plain fixed-α QuantReLU (a learned step runs autograd, not the fast step)."""
    return _plain(module, QuantReLU) and cast(QuantReLU, module).quant.learn is None


def _model_quant(quant: ActQuant | None, bits: int, alpha: float | None, ste: str | STE) -> ActQuant:
    if quant is None:
        return ActQuant(bits, alpha, ste)
    if (bits, alpha, ste) != (2, None, "clipped_relu"):
        raise ConfigError("quant", "give either quant or bits/alpha/ste, not both")
    return as_quant(quant)


_FROM_BITS: Any = object()


def _spec(quant: Any, bits: int | None, alpha: float | None, ste: str | STE) -> ActQuant | None:
    """The activation spec, or None for the float baseline (``quant=None``, or ``bits=None``
    when ``quant`` is not given)."""
    if quant is _FROM_BITS:
        return None if bits is None else ActQuant(bits, alpha, ste)
    return None if quant is None else _model_quant(quant, 2 if bits is None else bits, alpha, ste)


def _activation(spec: ActQuant | None) -> nn.Module:
    """σ: the staircase with its STE, or plain ReLU for the float baseline."""
    return nn.ReLU() if spec is None else QuantReLU(spec)


def _positive_int(name: str, value: object) -> int:
    return integer(name, value, lo=1)


def init_linear(layer: nn.Linear, generator: torch.Generator | None) -> nn.Linear:
    """PyTorch's default init U(−1/√fan_in, 1/√fan_in) for weight and bias, drawn from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


def make_linear(
    in_features: int, out_features: int, generator: torch.Generator | None, bias: bool = True
) -> nn.Linear:
    """An ``nn.Linear`` initialised from ``generator`` (the global RNG is not used)."""
    layer = nn.utils.skip_init(nn.Linear, in_features, out_features, bias=bias)
    return init_linear(layer, generator)


class TwoLayerNet(nn.Module):
    """o = V·σ(Wx), W ∈ R^{K·m × d}, V ∈ R^{K × K·m}; σ the b-bit staircase with an STE.

    ``second_layer="fixed"``: V is the block of ones (V[k, u] = 1 iff unit u belongs
    to class k), a buffer. ``"trained"``: V starts as that block and is a parameter.
    W starts as ``init_scale``·N(0, 1/d) entries (small random initialisation).
    """

    def __init__(
        self, in_features: int, num_classes: int, units_per_class: int,
        bits: int | None = 2, alpha: float | None = None, ste: str | STE = "clipped_relu",
        second_layer: Literal["fixed", "trained"] = "fixed", init_scale: float = 0.1,
        *, generator: torch.Generator | None = None, quant: Any = _FROM_BITS,
    ) -> None:
        super().__init__()
        spec = _spec(quant, bits, alpha, ste)
        self.in_features = _positive_int("in_features", in_features)
        self.num_classes = _positive_int("num_classes", num_classes)
        self.units_per_class = _positive_int("units_per_class", units_per_class)
        if second_layer not in ("fixed", "trained"):
            raise ConfigError("second_layer", f"must be 'fixed' or 'trained', got {second_layer!r}")
        number("init_scale", init_scale, lo=0.0, lo_open=True)
        self.second_layer = second_layer
        hidden = num_classes * units_per_class
        w = torch.randn(hidden, in_features, generator=generator) * (init_scale / math.sqrt(in_features))
        self.W = nn.Parameter(w)
        self.act = _activation(spec)
        block = torch.repeat_interleave(torch.eye(num_classes), units_per_class, dim=1)
        if second_layer == "trained":
            self.V = nn.Parameter(block)
        else:
            self.register_buffer("V", block)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations Wx, shape [N, K·m]."""
        return x @ self.W.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.hidden(x)) @ self.V.t()

    def two_layer_form(self) -> TwoLayerForm | None:
        """The fast step's view of this network, or None when its forward is not the
        two-layer form (a subclass overriding ``forward``/``hidden``, another activation)."""
        own = type(self).forward is TwoLayerNet.forward and type(self).hidden is TwoLayerNet.hidden
        if not own or not _fixed_act(self.act):
            return None
        return TwoLayerForm(self.W, None, self.V, None, cast(QuantReLU, self.act).quant)


class MLP(nn.Module):
    """x → Linear(in, hidden) → [BatchNorm1d(affine=False)] → σ → Linear(hidden, classes)."""

    def __init__(
        self, in_features: int, hidden: int, num_classes: int,
        bits: int | None = 2, alpha: float | None = None, ste: str | STE = "clipped_relu", batchnorm: bool = False,
        *, generator: torch.Generator | None = None, quant: Any = _FROM_BITS,
    ) -> None:
        super().__init__()
        spec = _spec(quant, bits, alpha, ste)
        _positive_int("in_features", in_features)
        _positive_int("hidden", hidden)
        _positive_int("num_classes", num_classes)
        self.fc1 = make_linear(in_features, hidden, generator)
        self.norm = nn.BatchNorm1d(hidden, affine=False) if batchnorm else nn.Identity()
        self.act = _activation(spec)
        self.fc2 = make_linear(hidden, num_classes, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(x.flatten(1)))))

    def two_layer_form(self) -> TwoLayerForm | None:
        """The fast step's view of this network, or None when its forward is not the
        two-layer form (a batch-norm, a subclass overriding ``forward``, replaced layers)."""
        if type(self).forward is not MLP.forward or not isinstance(self.norm, nn.Identity):
            return None
        if not (_fixed_act(self.act) and _plain(self.fc1, nn.Linear) and _plain(self.fc2, nn.Linear)):
            return None
        return TwoLayerForm(self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, cast(QuantReLU, self.act).quant)


class LeNet5(nn.Module):
    """LeNet-5 with a batch-norm without affine before each quantized activation.

    conv5×5(1→c₁) → BN → σ → maxpool2 → conv5×5(c₁→c₂) → BN → σ → maxpool2 →
    fc(16·c₂→h) → BN → σ → fc(h→classes); input [N, 1, 28, 28] (or [N, 784]).
    Defaults c₁, c₂, h = 20, 50, 500 (the Caffe LeNet-5 used with the ICLR 2019
    table's setup: float weights, α fixed at ``optimal_alpha(bits)``). ``quant=None``
    (or, without ``quant``, ``bits=None``) gives the float network with plain ReLU (for
    the float initialisation).
    """

    def __init__(
        self,
        num_classes: int = 10,
        bits: int | None = 2,
        alpha: float | None = None,
        ste: str | STE = "clipped_relu",
        channels: tuple[int, int] = (20, 50),
        hidden: int = 500,
        *,
        generator: torch.Generator | None = None,
        quant: Any = _FROM_BITS,
    ) -> None:
        super().__init__()
        c1, c2 = (_positive_int("channels", c) for c in channels)
        hidden = _positive_int("hidden", hidden)
        spec = _spec(quant, bits, alpha, ste)

        def act() -> nn.Module:
            return _activation(spec)

        self.features = nn.Sequential(
            _conv(1, c1, generator), nn.BatchNorm2d(c1, affine=False), act(), nn.MaxPool2d(2),
            _conv(c1, c2, generator), nn.BatchNorm2d(c2, affine=False), act(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            make_linear(16 * c2, hidden, generator), nn.BatchNorm1d(hidden, affine=False), act(),
            make_linear(hidden, _positive_int("num_classes", num_classes), generator),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.reshape(-1, 1, 28, 28)).flatten(1))


def _conv(cin: int, cout: int, generator: torch.Generator | None) -> nn.Conv2d:
    """A 5×5 conv with PyTorch's default init bound 1/√fan_in, drawn from ``generator``."""
    conv = nn.utils.skip_init(nn.Conv2d, cin, cout, 5)
    bound = 1.0 / math.sqrt(cin * 25)
    with torch.no_grad():
        conv.weight.uniform_(-bound, bound, generator=generator)
        conv.bias.uniform_(-bound, bound, generator=generator)
    return conv
