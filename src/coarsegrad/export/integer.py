"""Integer form of a trained network, and a NumPy reference engine that runs it.

A :class:`~coarsegrad.TwoLayerNet` or :class:`~coarsegrad.MLP` becomes

    z = W₁x + b₁                          first layer (eval batch-norm folded in)
    c = #{j ∈ 0..L−1 : z > T_j},  T_j = fl32((j + o)·α)   b-bit codes, L = 2^b − 1
    o = (αV)·c + b₂                       α folded into the second layer

with T_j the float32 thresholds of the model's :class:`~coarsegrad.ActQuant` (o = 0, ½, 1
for its ceil, nearest, floor rounding), so c equals :func:`coarsegrad.staircase_codes`
of z (for ceil, clip(⌈z/α⌉, 0, L) up to the boundary rule) and o equals the float model's V·σ(z) + b₂ up to rounding. The engine
counts thresholds directly (``np.searchsorted``), an implementation independent of the
⌈z/α⌉-plus-correction used by the quantizer and the ONNX graph.

``weights="int8"`` also quantizes the first layer (symmetric, per output channel,
w ≈ s_h·q, q ∈ −127..127) and the input (uint8 on a static range [lo, hi], a = (hi − lo)/255,
zp = rint(−lo/a): p = clip(rint(x/a) + zp, 0, 255), read back as x̂ = lo + a·p, which is
exact for inputs on the lattice lo + k·a such as normalised 8-bit pixels). With 1/α
folded into the first layer the pre-activation is counted in steps of α:

    acc = Σ_i q_hi·p_i  (exact int32),   u = fl32(acc)·fl32(a·s_h/α) + fl32((b₁ + lo·s_h·Σ_i q_hi)/α − o)
    c = clip(⌈u⌉, 0, L) = #{j ∈ 0..L−1 : u > j}

(two float32 operations after the exact integer product, then integer thresholds), so
the ONNX graph and this engine agree bit for bit. Codes may differ from the float
model's; :mod:`coarsegrad.export.agreement` measures by how much.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.models.networks import MLP, TwoLayerNet
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.convert import check_fixed
from coarsegrad.quant.qlayers import QUANT_LAYERS
from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.staircase import DEFAULT_ROUNDING

INT8_MAX = 127
UINT8_MAX = 255


def thresholds(quant: ActQuant) -> np.ndarray:
    """T_j = fl32((j + o)·fl32(α)) for j = 0..L−1, float32: ``quant.thresholds(float32)``."""
    return np.array(quant.thresholds(torch.float32), dtype=np.float32)


def threshold_codes(z: np.ndarray, quant: ActQuant) -> np.ndarray:
    """c = #{j ∈ 0..L−1 : z > T_j} as uint8 (the definition of :func:`staircase_codes`)."""
    z = np.asarray(z, dtype=np.float32)
    return np.searchsorted(thresholds(quant), z, side="left").astype(np.uint8)


@dataclass(frozen=True)
class IntegerModel:
    """A network in integer form (see the module docstring for the formulas).

    ``w1`` is float32 [H, d], or int8 with ``w1_scale`` (float32 [H], = fl32(a·s_h/α)),
    ``b1`` then in units of α, and ``input_lo``/``input_step``/``input_zero`` (the uint8
    input quantizer). ``w2`` = fl32(α·V) [K, H].
    """

    bits: int
    alpha: float
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    w1_scale: np.ndarray | None = None
    input_lo: float | None = None
    input_step: float | None = None
    input_zero: int | None = None
    source: str = ""
    rounding: str = DEFAULT_ROUNDING

    def __post_init__(self) -> None:
        _ = self.quant  # validates bits, alpha and rounding
        hidden, dim = self.w1.shape if self.w1.ndim == 2 else (-1, -1)
        classes = self.w2.shape[0] if self.w2.ndim == 2 else -1
        expected = {"w1": (hidden, dim), "b1": (hidden,), "w2": (classes, hidden), "b2": (classes,)}
        if self.int8:
            expected["w1_scale"] = (hidden,)
        for name, shape in expected.items():
            arr = getattr(self, name)
            if hidden < 1 or arr.shape != shape:
                raise DataError(name, f"shape {arr.shape} does not fit w1 {self.w1.shape}, w2 {self.w2.shape}")
            want = np.int8 if (name == "w1" and self.int8) else np.float32
            if arr.dtype != want:
                raise DataError(name, f"must be {np.dtype(want).name}, got {arr.dtype}")
        for name in ("w1", "b1", "w2", "b2", "w1_scale", "input_lo", "input_step"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(np.asarray(value, dtype=np.float64)).all():
                raise DataError(name, "contains NaN or infinite values")
        if self.int8 and (self.input_lo is None or self.input_step is None or not self.input_step > 0
                          or self.input_zero not in range(UINT8_MAX + 1)):
            raise DataError("input_step", "int8 weights need the uint8 input quantizer "
                            "(input_lo, input_step > 0, input_zero in 0..255)")

    @functools.cached_property
    def quant(self) -> ActQuant:
        """The activation spec of the codes (its α is the float32 α of the source model)."""
        return ActQuant(self.bits, self.alpha, rounding=self.rounding)  # type: ignore[arg-type]

    @property
    def int8(self) -> bool:
        """True if the first layer runs as uint8 input × int8 weights."""
        return self.w1_scale is not None

    @property
    def edges(self) -> np.ndarray:
        """Step edges in the units of :meth:`preactivations`: the spec's float32 thresholds
        fl32((j + o)α), or j (int8: o is folded into b₁)."""
        if self.int8:
            return np.arange(self.quant.levels, dtype=np.float32)
        return thresholds(self.quant)

    @property
    def in_features(self) -> int:
        return int(self.w1.shape[1])

    @property
    def hidden(self) -> int:
        return int(self.w1.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.w2.shape[0])

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        if x.ndim < 2 or not np.issubdtype(x.dtype, np.floating):
            raise DataError("x", f"must be a float array [N, ...], got {x.dtype} {x.shape}")
        x = x.reshape(x.shape[0], -1).astype(np.float32, copy=False)
        if x.shape[1] != self.in_features:
            raise DataError("x", f"has {x.shape[1]} features, the model expects {self.in_features}")
        if not np.isfinite(x).all():
            raise DataError("x", "contains NaN or infinite values")
        return x

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """p = clip(rint(x/a) + zp, 0, 255) as uint8, x/a in float32 (int8 mode; ONNX QuantizeLinear)."""
        if not self.int8:
            raise ConfigError("weights", "quantize_input needs an int8 model")
        x = self._check_input(x)
        t = np.rint(x / np.float32(self.input_step)) + np.float32(self.input_zero)
        return np.clip(t, 0, UINT8_MAX).astype(np.uint8)

    def preactivations(self, x: np.ndarray) -> np.ndarray:
        """[N, H] float32: z = W₁x + b₁ (float: float64 sums, rounded once), or u = z/α (int8, formula above)."""
        if self.int8:
            p = self.quantize_input(x)
            # Integer products summed in float64 are exact: |acc| ≤ 255·127·d < 2^53.
            acc = p.astype(np.float64) @ self.w1.T.astype(np.float64)
            return acc.astype(np.float32) * self.w1_scale + self.b1
        x = self._check_input(x)
        z = x.astype(np.float64) @ self.w1.T.astype(np.float64) + self.b1.astype(np.float64)
        return z.astype(np.float32)

    def codes(self, x: np.ndarray) -> np.ndarray:
        """c [N, H] uint8 in 0..2^b − 1: the number of :attr:`edges` below the pre-activation."""
        return np.searchsorted(self.edges, self.preactivations(x), side="left").astype(np.uint8)

    def logits_from_codes(self, codes: np.ndarray) -> np.ndarray:
        """o = (αV)·c + b₂ [N, K], float64 sums of the float32 weights."""
        return codes.astype(np.float64) @ self.w2.T.astype(np.float64) + self.b2.astype(np.float64)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """o [N, K] float64."""
        return self.logits_from_codes(self.codes(x))

    def predict(self, x: np.ndarray, return_codes: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """argmax_k o_k (first index on ties) as int64 [N]; with ``return_codes`` also c."""
        codes = self.codes(x)
        pred = self.logits_from_codes(codes).argmax(axis=1)
        return (pred, codes) if return_codes else pred


def _quant_act(model: nn.Module) -> QuantReLU:
    act = model.get_submodule("act")
    if not isinstance(act, QuantReLU):
        raise ConfigError("model", "a float model (plain ReLU) has no integer form; export it as ONNX float")
    return act


def _first_layer(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, QuantReLU, torch.Tensor, torch.Tensor]:
    """(W₁, b₁, act, V, b₂) in float64 with the eval batch-norm folded into W₁, b₁."""
    if isinstance(model, TwoLayerNet):
        w = model.W.detach().double()
        v = model.V.detach().double()
        return w, torch.zeros(w.shape[0], dtype=torch.float64), _quant_act(model), v, torch.zeros(v.shape[0], dtype=torch.float64)
    if isinstance(model, MLP):
        w = model.fc1.weight.detach().double()
        b = model.fc1.bias.detach().double() if model.fc1.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        norm = model.norm
        if isinstance(norm, nn.BatchNorm1d):
            if norm.running_mean is None or norm.running_var is None:
                raise ConfigError("model", "batch-norm without running statistics cannot be folded")
            scale = 1.0 / torch.sqrt(norm.running_var.double() + norm.eps)
            shift = -norm.running_mean.double() * scale
            if norm.affine:
                scale, shift = scale * norm.weight.detach().double(), shift * norm.weight.detach().double() + norm.bias.detach().double()
            w, b = w * scale[:, None], b * scale + shift
        elif not isinstance(norm, nn.Identity):
            raise ConfigError("model", f"cannot fold normalisation {type(norm).__name__}")
        fc2 = model.fc2
        b2 = fc2.bias.detach().double() if fc2.bias is not None else torch.zeros(fc2.out_features, dtype=torch.float64)
        return w, b, _quant_act(model), fc2.weight.detach().double(), b2
    raise ConfigError("model", f"to_integer supports TwoLayerNet and MLP, got {type(model).__name__}")


def check_float_weights(model: nn.Module) -> None:
    """``ConfigError('model')`` when ``model`` has quantized-weight layers (QuantLinear,
    QuantConv2d): exporting their latent float weights would not be the model that was
    trained; their export is the integer-only form of :mod:`coarsegrad.export.qmodel`."""
    if any(isinstance(m, QUANT_LAYERS) for m in model.modules()):
        raise ConfigError("model", "has quantized weights (QuantLinear/QuantConv2d); export it integer-only "
                                   "(coarsegrad.export.to_quantized, MLP and LeNet-5) or evaluate it in PyTorch")


def to_integer(
    model: nn.Module,
    *,
    weights: Literal["float32", "int8"] = "float32",
    input_range: tuple[float, float] | None = None,
) -> IntegerModel:
    """The integer form of ``model`` (eval statistics; the model is not modified).

    ``weights="int8"`` needs ``input_range=(lo, hi)``, the range of the inputs (e.g. the
    training data's min and max; widened to contain 0): inputs are quantized to uint8 on it.
    """
    if weights not in ("float32", "int8"):
        raise ConfigError("weights", f"must be 'float32' or 'int8', got {weights!r}")
    check_float_weights(model)
    check_fixed(model)
    w, b, act, v, b2 = _first_layer(model)
    if not isinstance(act, QuantReLU):
        raise ConfigError("model", f"activation must be QuantReLU, got {type(act).__name__}")
    alpha32 = np.float32(act.alpha)
    w2 = (np.float64(alpha32) * v.numpy()).astype(np.float32)
    common = dict(bits=act.bits, alpha=float(alpha32), rounding=act.quant.rounding, w2=w2, b2=b2.numpy().astype(np.float32),
                  source=type(model).__name__)
    if weights == "float32":
        return IntegerModel(w1=w.numpy().astype(np.float32), b1=b.numpy().astype(np.float32), **common)
    if input_range is None:
        raise ConfigError("input_range", "int8 mode quantizes the input to uint8; give its (min, max), "
                          "e.g. from the training data")
    lo, hi = (float(r) for r in input_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi >= lo):
        raise ConfigError("input_range", f"must be finite with min <= max, got {input_range!r}")
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # 0 inside the range: the zero point is in 0..255
    step = float(np.float32((hi - lo) / UINT8_MAX)) if hi > lo else 1.0
    zero = int(np.clip(np.rint(-lo / step), 0, UINT8_MAX))
    wn = w.numpy()
    s = np.abs(wn).max(axis=1) / INT8_MAX
    s[s == 0] = 1.0
    q = np.clip(np.rint(wn / s[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    alpha = np.float64(alpha32)
    bias = (b.numpy() + lo * s * q.astype(np.float64).sum(axis=1)) / alpha - act.quant.offset
    return IntegerModel(w1=q, b1=bias.astype(np.float32), w1_scale=(step * s / alpha).astype(np.float32),
                        input_lo=lo, input_step=step, input_zero=zero, **common)
