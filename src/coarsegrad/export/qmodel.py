"""Integer-only form of a fully quantized MLP or LeNet-5, and a NumPy engine that runs it.

A model whose every Linear/Conv2d is a :class:`~coarsegrad.quant.qlayers.QuantLinear` /
:class:`~coarsegrad.quant.qlayers.QuantConv2d` deploys Q(w) = s·q, with integer codes q
and a scale s per layer or per output channel from :func:`coarsegrad.quant.weights.weight_codes`
(the one source of (codes, scales)). Each hidden layer o is Linear/Conv → [BatchNorm, eval] →
σ → [MaxPool]; σ(z) = α·c(z), c(z) = #{j ∈ 0..L−1 : z > t_j}, t_j the float32 thresholds
of its :class:`~coarsegrad.ActQuant` (``quant.thresholds(float32)``).

**Integer accumulator.** The input of layer 1 is the uint8 pixel p: the data are
x = (p/255 − μ)/σ (:mod:`coarsegrad.data.splits`, μ, σ the training pixel mean and std
recorded as the checkpoint's ``normalization``). The input of every later layer is α_in·c_in,
c_in the previous layer's codes. With acc_o = Σ_i q_oi·c_i (c = p for layer 1), in real
arithmetic

    layer 1:   Σ_i w_oi·x_i = s_o/(255σ)·acc_o − s_o·(μ/σ)·Q_o,     Q_o = Σ_i q_oi
    later:     Σ_i w_oi·a_i = s_o·α_in·acc_o

(for a convolution Q_o sums the whole kernel: every output sees all of it, as padding is 0).
A batch-norm in eval mode is y = (v − mean)·g + β (g = γ/√(var + ε); :func:`~coarsegrad.export.traced.norm_affine`),
so the pre-activation is affine in the accumulator, z_o = k_o·acc_o + m_o, with

    k_o = g_o·s_o·step,   step = 1/(255σ) (layer 1) or α_in,
    m_o = g_o·(b_o − mean_o − [layer 1] s_o·(μ/σ)·Q_o) + β_o          (float64).

**Thresholds on the accumulator.** For k_o > 0, since acc_o is an integer,

    z_o > t_j  ⟺  acc_o > (t_j − m_o)/k_o  ⟺  acc_o > T_oj = ⌊(t_j − m_o)/k_o⌋,

so c_o = #{j : acc_o > T_oj}: L integer comparisons per unit, no float arithmetic. A channel
with k_o < 0 has its codes negated (acc' = −acc, k' = −k > 0); with k_o = 0 the code is the
constant #{j : m_o > t_j}. T is clipped to [−A_o − 1, A_o], A_o = Σ_i |q_oi|·c_max the
largest |acc_o| (c_max = 255 for pixels, L_in for codes), which changes no comparison.
σ is monotone, so max-pool commutes with it: the engine pools the codes.

**Last layer.** logits_o = s_o·α_in·acc_o + b_o, made as fl32(acc_o)·fl32(s_o·α_in) + fl32(b_o)
(two float32 operations; the only float arithmetic of the model).

**Exactness of the engine.** |every partial sum of acc_o| ≤ A_o. The engine multiplies
integer-valued float32 arrays (BLAS sgemm) when A = max_o A_o < 2^24 and float64 ones when
A < 2^53: every partial sum is then an integer that the format represents exactly, so the
product is exact in any summation order, with or without FMA. (:meth:`QuantizedModel.accumulate`
with ``exact="int64"`` runs np.matmul on int64 arrays instead: the tests' oracle.)

The float model computes z in float32 from Q(w) and the float32 inputs, so its codes can
differ from the integer form's only where z lies within float32 rounding of a threshold
(:mod:`coarsegrad.export.qagreement` counts and explains every difference).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.export.traced import norm_affine
from coarsegrad.models.networks import MLP, LeNet5
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.convert import check_fixed
from coarsegrad.quant.qlayers import QUANT_LAYERS, QuantConv2d, QuantLinear

FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53
INT32_MAX = (1 << 31) - 1
PIXEL_MAX = 255
CHUNK = 1000


def layer_codes(layer: QuantLinear | QuantConv2d) -> tuple[np.ndarray, np.ndarray]:
    """(q int8 [out, ...], s float64 [out]) of ``layer``: its ``codes_and_scales()``
    (:func:`~coarsegrad.quant.weights.weight_codes` of its latent weight under its spec, with the learned step of an
    LSQ layer), the scale broadcast to one per output channel (Q(w) = s·q)."""
    codes, scales = layer.codes_and_scales()
    out = codes.shape[0]
    s = np.broadcast_to(scales.detach().to(torch.float64).reshape(-1).numpy(), (out,)).copy()
    return codes.numpy().astype(np.int8), s


@dataclass(frozen=True)
class QLayer:
    """One layer of the integer form: weight codes ``q`` (int8, [out, in] or [out, cin, kh, kw])
    and either ``thresholds`` (int64 [out, L], a hidden layer: c = #{j : acc > T_oj}) or
    ``scale`` and ``bias`` (float32 [out], the last layer: logits = fl32(acc)·scale + bias).
    ``weight_kind``/``weight_bits`` say how q is stored; ``pool`` is the max-pool
    kernel (= stride) applied to the codes, 0 for none."""

    q: np.ndarray
    weight_kind: str
    weight_bits: int
    thresholds: np.ndarray | None = None
    scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    pool: int = 0

    @property
    def kind(self) -> Literal["conv", "linear"]:
        return "conv" if self.q.ndim == 4 else "linear"

    @property
    def out_features(self) -> int:
        return int(self.q.shape[0])

    @property
    def levels(self) -> int:
        """L of the codes this layer outputs (0 for the last layer)."""
        return 0 if self.thresholds is None else int(self.thresholds.shape[1])


@dataclass(frozen=True)
class QuantizedModel:
    """A fully quantized network in integer form (module docstring): ``layers`` in order,
    the input's per-sample shape and normalisation (x = (p/255 − mean)/std)."""

    layers: tuple[QLayer, ...]
    input_shape: tuple[int, ...]
    mean: float
    std: float
    architecture: str = ""
    shapes: tuple[tuple[int, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.layers:
            raise DataError("layers", "a quantized model needs at least one layer")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise DataError("normalization", f"mean and std must be finite, std > 0, got {self.mean}, {self.std}")
        shape = tuple(int(s) for s in self.input_shape)
        if not shape or any(s < 1 for s in shape):
            raise DataError("input_shape", f"must be positive sizes, got {self.input_shape!r}")
        shapes = [shape]
        for i, layer in enumerate(self.layers):
            shape = _check_layer(f"layer{i}", layer, shape, last=i == len(self.layers) - 1)
            shapes.append(shape)
        object.__setattr__(self, "shapes", tuple(shapes))
        for i in range(len(self.layers)):
            if self.bound(i) > INT32_MAX:
                raise DataError(f"layer{i}", f"accumulator bound {self.bound(i)} exceeds int32")

    @property
    def in_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_features

    def in_max(self, i: int) -> int:
        """Largest input code of layer ``i``: 255 (pixels) or L of the layer before."""
        return PIXEL_MAX if i == 0 else self.layers[i - 1].levels

    def bound(self, i: int) -> int:
        """A = max_o Σ_i |q_oi|·c_max: no partial sum of layer ``i``'s accumulator exceeds it."""
        q = self.layers[i].q
        return int(np.abs(q.astype(np.int64)).reshape(q.shape[0], -1).sum(axis=1).max()) * self.in_max(i)

    def pixels(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """The uint8 pixels p as float32 [N, *input_shape]: uint8 input as it is; normalised float
        input x mapped back by p = clip(rint(fl32(x·fl32(255σ)) + fl32(255μ)), 0, 255) in float32
        (exact for x = (p/255 − μ)/σ made in float32; the ONNX graph does the same operations)."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        if x.ndim < 1 or x.size % max(self.in_features, 1) or len(x) * self.in_features != x.size:
            raise DataError("x", f"shape {x.shape} is not [N, {self.in_features}] or [N, *{self.input_shape}]")
        x = x.reshape(len(x), *self.input_shape)
        if x.dtype == np.uint8:
            return x.astype(np.float32)
        if not np.issubdtype(x.dtype, np.floating):
            raise DataError("x", f"must be uint8 pixels or normalised floats, got {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise DataError("x", "contains NaN or infinite values")
        scale, shift = self.input_affine
        return np.clip(np.rint(x * scale + shift), 0, PIXEL_MAX).astype(np.float32)

    @property
    def input_affine(self) -> tuple[np.float32, np.float32]:
        """(fl32(255σ), fl32(255μ)): p = x·255σ + 255μ."""
        return np.float32(PIXEL_MAX * self.std), np.float32(PIXEL_MAX * self.mean)

    def accumulate(self, i: int, a: np.ndarray, exact: Literal["blas", "int64"] = "blas") -> np.ndarray:
        """acc of layer ``i`` for integer-valued input ``a`` (float32 [N, ...]): exact integers,
        as float32 (A < 2^24), float64 (A < 2^53) or, with ``exact="int64"``, int64 (module docstring)."""
        layer = self.layers[i]
        if exact == "int64":
            dtype: Any = np.int64
        else:
            dtype = np.float32 if self.bound(i) < FLOAT32_EXACT else np.float64
        q = layer.q.astype(dtype)
        a = a.astype(dtype, copy=False)
        if layer.kind == "linear":
            return np.matmul(a.reshape(len(a), -1), q.T)
        out, _, kh, kw = q.shape
        windows = np.lib.stride_tricks.sliding_window_view(a, (kh, kw), axis=(2, 3))  # [N, C, OH, OW, kh, kw]
        n, c, oh, ow = windows.shape[:4]
        cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
        acc = np.matmul(cols, q.reshape(out, -1).T)
        return acc.reshape(n, oh, ow, out).transpose(0, 3, 1, 2)

    def codes_of(self, i: int, acc: np.ndarray) -> np.ndarray:
        """c = #{j : acc > T_oj} as uint8, same shape as ``acc``."""
        t = self.layers[i].thresholds
        assert t is not None  # hidden layers only
        t = t.reshape(t.shape[0], *([1] * (acc.ndim - 2)), t.shape[1]).astype(acc.dtype)
        return (acc[..., None] > t).sum(axis=-1, dtype=np.uint8)

    def logits_of(self, acc: np.ndarray) -> np.ndarray:
        """fl32(acc)·scale + bias, float32 [N, K]."""
        last = self.layers[-1]
        assert last.scale is not None and last.bias is not None  # the last layer has them
        return acc.astype(np.float32) * last.scale + last.bias

    def forward(self, x: np.ndarray | torch.Tensor, exact: Literal["blas", "int64"] = "blas") -> tuple[np.ndarray, list[np.ndarray]]:
        """(logits float32 [N, K], codes uint8 of every hidden layer before its pool) for one batch."""
        a = self.pixels(x)
        codes = []
        for i, layer in enumerate(self.layers[:-1]):
            c = self.codes_of(i, self.accumulate(i, a, exact))
            codes.append(c)
            if layer.pool:
                c = max_pool(c, layer.pool)
            a = c.astype(np.float32)
        return self.logits_of(self.accumulate(len(self.layers) - 1, a, exact)), codes

    def logits(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits float32 [N, K], in chunks of 1000 samples."""
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        parts = [self.forward(x[s:s + CHUNK])[0] for s in range(0, len(x), CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_classes), np.float32)

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """argmax_k logits (first index on ties), int64 [N]."""
        return self.logits(x).argmax(axis=1)


def max_pool(c: np.ndarray, k: int) -> np.ndarray:
    """Max over k×k windows with stride k of [N, C, H, W] (the rows and columns past ⌊H/k⌋·k dropped)."""
    n, ch, h, w = c.shape
    c = c[:, :, : h // k * k, : w // k * k]
    return c.reshape(n, ch, h // k, k, w // k, k).max(axis=(3, 5))


def _check_layer(name: str, layer: QLayer, shape: tuple[int, ...], last: bool) -> tuple[int, ...]:
    """Validate ``layer`` against its input ``shape``; returns its output shape (after the pool)."""
    q = layer.q
    if not isinstance(q, np.ndarray) or q.dtype != np.int8 or q.ndim not in (2, 4) or 0 in q.shape:
        raise DataError(name, "weight codes must be a non-empty int8 array [out, in] or [out, cin, kh, kw]")
    if layer.kind == "conv":
        if len(shape) != 3 or q.shape[1] != shape[0] or q.shape[2] > shape[1] or q.shape[3] > shape[2]:
            raise DataError(name, f"conv codes {q.shape} do not fit the input {shape}")
        out: tuple[int, ...] = (q.shape[0], shape[1] - q.shape[2] + 1, shape[2] - q.shape[3] + 1)
    else:
        if q.shape[1] != math.prod(shape):
            raise DataError(name, f"linear codes {q.shape} do not fit the input {shape} ({math.prod(shape)} features)")
        out = (q.shape[0],)
    if last:
        for part in ("scale", "bias"):
            v = getattr(layer, part)
            if not isinstance(v, np.ndarray) or v.dtype != np.float32 or v.shape != (q.shape[0],) or not np.isfinite(v).all():
                raise DataError(name, f"the last layer's {part} must be finite float32 [{q.shape[0]}]")
        if layer.thresholds is not None or layer.pool:
            raise DataError(name, "the last layer has no thresholds and no pool")
    else:
        t = layer.thresholds
        if not isinstance(t, np.ndarray) or t.dtype != np.int64 or t.ndim != 2 or t.shape[0] != q.shape[0]:
            raise DataError(name, f"thresholds must be int64 [{q.shape[0]}, L]")
        if t.shape[1] < 1 or (t.shape[1] + 1) & t.shape[1] or t.shape[1] > PIXEL_MAX:
            raise DataError(name, f"L = {t.shape[1]} thresholds is not 2^b − 1 for b in 1..8")
        if layer.scale is not None or layer.bias is not None:
            raise DataError(name, "a hidden layer has thresholds, no scale or bias")
        if layer.pool:
            if layer.kind != "conv" or not 1 <= layer.pool <= min(out[1:]):
                raise DataError(name, f"pool {layer.pool} needs a conv output of at least that size, got {out}")
            out = (out[0], out[1] // layer.pool, out[2] // layer.pool)
    return out


def _stages(model: nn.Module) -> list[tuple[nn.Module, nn.Module | None, nn.Module | None, nn.Module | None]]:
    """(layer, batch-norm, activation, pool) of each layer of an MLP or LeNet-5 (forward not overridden)."""
    if type(model) is LeNet5 or (isinstance(model, LeNet5) and type(model).forward is LeNet5.forward):
        f, c = model.features, model.classifier
        return [(f[0], f[1], f[2], f[3]), (f[4], f[5], f[6], f[7]), (c[0], c[1], c[2], None), (c[3], None, None, None)]
    if isinstance(model, MLP) and type(model).forward is MLP.forward:
        norm = None if isinstance(model.norm, nn.Identity) else model.norm
        return [(model.fc1, norm, model.act, None), (model.fc2, None, None, None)]
    raise ConfigError("model", f"the integer-only form covers MLP and LeNet5, got {type(model).__name__}")


def _pool_size(pool: nn.Module | None) -> int:
    if pool is None:
        return 0
    ok = isinstance(pool, nn.MaxPool2d) and pool.padding == 0 and pool.dilation == 1 and not pool.ceil_mode
    k = pool.kernel_size if isinstance(pool, nn.MaxPool2d) else None
    stride = pool.stride if isinstance(pool, nn.MaxPool2d) else None
    if not ok or not isinstance(k, int) or stride not in (k, (k, k)):
        raise ConfigError("model", f"only MaxPool2d with kernel = stride, no padding, is supported, got {pool}")
    return k


def _thresholds(k: np.ndarray, m: np.ndarray, t: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """T_oj = ⌊(t_j − m_o)/k_o⌋ for k_o > 0; for k_o = 0 always (−A−1) or never (A) true;
    clipped to [−A_o − 1, A_o] (module docstring)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.floor((t[None, :] - m[:, None]) / np.where(k > 0, k, 1.0)[:, None])
    const = np.where(m[:, None] > t[None, :], -np.inf, np.inf)
    r = np.where((k > 0)[:, None], r, const)
    return np.clip(r, -bound[:, None] - 1, bound[:, None]).astype(np.int64)


def to_quantized(model: nn.Module, normalization: tuple[float, float]) -> QuantizedModel:
    """The integer form of a fully quantized MLP or LeNet-5 (eval statistics; module docstring).

    ``normalization``: (μ, σ) of the inputs x = (p/255 − μ)/σ, as the checkpoint header records.
    ConfigError if a Linear/Conv2d has float weights, an activation has a learned step
    (call :func:`coarsegrad.freeze_learned` first) or the structure is not the library's.
    """
    check_fixed(model)
    mean, std = (float(v) for v in normalization)
    stages = _stages(model)
    is_lenet = isinstance(model, LeNet5)
    layers: list[QLayer] = []
    step, in_max = 1.0 / (PIXEL_MAX * std), PIXEL_MAX
    for i, (layer, norm, act, pool) in enumerate(stages):
        if not isinstance(layer, QUANT_LAYERS):
            raise ConfigError("model", f"layer {i + 1} ({type(layer).__name__}) has float weights; the integer-only "
                              "form needs every Linear/Conv2d quantized (QuantLinear/QuantConv2d)")
        if isinstance(layer, QuantConv2d) and (layer.stride != (1, 1) or layer.padding != (0, 0)
                                               or layer.dilation != (1, 1) or layer.groups != 1):
            raise ConfigError("model", f"layer {i + 1}: only stride 1, padding 0, dilation 1, groups 1 convolutions are supported")
        q, s = layer_codes(layer)
        q64 = q.astype(np.int64).reshape(q.shape[0], -1)
        spec = layer.weight_quant
        bias = layer.bias.detach().double().numpy() if layer.bias is not None else np.zeros(q.shape[0])
        if i == len(stages) - 1:
            layers.append(QLayer(q, spec.kind, int(spec.bits or 0), scale=(s * step).astype(np.float32),
                                 bias=bias.astype(np.float32)))
            break
        if not isinstance(act, QuantReLU):
            raise ConfigError("model", f"layer {i + 1} is not followed by a QuantReLU (the float network has no integer form)")
        g, mean_bn, beta = (norm_affine(norm) if norm is not None
                            else (torch.ones(q.shape[0], dtype=torch.float64), torch.zeros(q.shape[0], dtype=torch.float64), None))
        g_np, mean_np = g.numpy(), mean_bn.numpy()
        shift = bias - mean_np - (s * (mean / std) * q64.sum(axis=1) if i == 0 else 0.0)
        m = g_np * shift + (beta.numpy() if beta is not None else 0.0)
        k = g_np * s * step
        flip = k < 0
        q = np.where(flip.reshape(-1, *([1] * (q.ndim - 1))), -q, q).astype(np.int8)
        k = np.abs(k)
        bound = np.abs(q64).sum(axis=1) * in_max
        t = np.array(act.quant.thresholds(torch.float32), dtype=np.float64)
        layers.append(QLayer(q, spec.kind, int(spec.bits or 0), thresholds=_thresholds(k, m, t, bound),
                             pool=_pool_size(pool)))
        step, in_max = float(np.float32(act.quant.alpha)), act.quant.levels
    in_features = int(layers[0].q.shape[1])
    return QuantizedModel(tuple(layers), (1, 28, 28) if is_lenet else (in_features,), mean, std,
                          "lenet5" if is_lenet else "mlp")


def float32_bytes(model: nn.Module) -> int:
    """4 × the number of float values eval needs: weights and biases of every Linear/Conv2d,
    running mean and variance (and γ, β) of every batch-norm."""
    count = 0
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            count += m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            count += 2 * m.running_mean.numel() + (2 * m.running_mean.numel() if m.affine else 0)
    return 4 * count


def deployed_size(model: nn.Module) -> tuple[int, int]:
    """(packed_bytes, float32_bytes) of a fully quantized MLP or LeNet-5: the tensor bytes of
    its packed integer form (:func:`coarsegrad.export.qmodel_io.packed_tensors`: codes at their
    bit width, thresholds, last-layer scale and bias) and of its float32 eval state
    (:func:`float32_bytes`)."""
    from coarsegrad.export.qmodel_io import packed_bytes

    return packed_bytes(to_quantized(model, (0.0, 1.0))), float32_bytes(model)


def images_per_second(run: Any, x: np.ndarray, repeats: int = 3) -> float:
    """len(x) / median wall time of ``repeats`` calls of ``run(x)`` after one warm-up call
    (``run``: e.g. ``QuantizedModel.predict`` or a PyTorch forward)."""
    if repeats < 1:
        raise ConfigError("repeats", f"must be >= 1, got {repeats}")
    run(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)
