"""ONNX export of the integer form, with standard operators only (opset 17).

Graph (x float32 [N, d] → logits float32 [N, K]; optional ``codes`` uint8 [N, H] and
``preact`` float32 [N, H], the value the codes threshold):

    float32:  z  = Gemm(x, W₁ᵀ) + b₁
              k₀ = Ceil(z/α − o)                    (o = 0, ½, 1: ceil, nearest, floor)
              k  = k₀ − [(k₀−1+o)·α ≥ z] + [(k₀+o)·α < z]
              c  = Clip(k, 0, L)
    int8:     p  = QuantizeLinear(x, a, zp)                 (uint8)
              u  = Cast<float>(MatMulInteger(p, q₁ᵀ))·scale + b₁   (in units of α, −o)
              c  = Clip(Ceil(u), 0, L)
    output:   o  = Gemm(c, (αV)ᵀ) + b₂

The float32 correction line makes c = #{j ∈ 0..L−1 : z > fl((j+o)α)} exactly, as in
:func:`coarsegrad.staircase_codes`: ⌈z/α⌉ can be one off where z/α rounds across an
integer; after the correction fl((k−1)α) < z ≤ fl(kα), and clipping gives the count.
``exact=False`` skips it (faster; :mod:`coarsegrad.export.agreement` counts the
disagreements). The int8 graph needs no correction: its edges are the integers.
``onnx`` and ``onnxruntime`` are imported only when these functions are called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.export.integer import IntegerModel, to_integer
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.spec import ActQuant

OPSET = 17
IR_VERSION = 8


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError("format", f"ONNX export needs the '{module}' package: "
                          "pip install 'coarsegrad[export]'") from None


class _Graph:
    """Collects nodes and initializers; ``op`` returns the new output name."""

    def __init__(self, onnx: Any) -> None:
        self.onnx, self.count = onnx, 0
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.values: dict[str, np.ndarray] = {}

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer; a name given twice (a staircase per layer) must hold the same value."""
        value = np.ascontiguousarray(value)
        if name in self.values:
            if self.values[name].dtype != value.dtype or not np.array_equal(self.values[name], value):
                raise ValueError(f"initializer {name!r} given two different values")
            return name
        self.values[name] = value
        self.inits.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def op(self, kind: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        self.count += 1
        out = out or f"{kind.lower()}_{self.count}"
        self.nodes.append(self.onnx.helper.make_node(kind, list(inputs), [out], **attrs))
        return out


def _staircase(g: _Graph, z: str, quant: ActQuant, in_alpha_units: bool, exact: bool, tag: str = "") -> str:
    """Codes of ``z`` (float): edges fl((j+o)α) of ``quant``, or the integers j when
    ``in_alpha_units`` (int8: α and o folded into the first layer). Constants are named by
    role + ``tag`` (one tag per spec when a graph holds several)."""
    f32 = np.float32
    zero, top = g.const(f"zero{tag}", np.array(0.0, f32)), g.const(f"levels{tag}", np.array(quant.levels, f32))
    if in_alpha_units:
        return g.op("Clip", g.op("Ceil", z), zero, top)
    a = g.const(f"alpha{tag}", np.array(quant.alpha, dtype=f32))
    scaled = g.op("Div", z, a)
    if quant.offset:
        scaled = g.op("Sub", scaled, g.const(f"offset{tag}", np.array(quant.offset, f32)))
    k0 = g.op("Ceil", scaled)
    if exact:
        float_t = g.onnx.TensorProto.FLOAT
        below = g.const(f"below{tag}", np.array(1.0 - quant.offset, f32))
        too_high = g.op("GreaterOrEqual", g.op("Mul", g.op("Sub", k0, below), a), z)
        upper = k0 if not quant.offset else g.op("Add", k0, g.const(f"offset_up{tag}", np.array(quant.offset, f32)))
        too_low = g.op("Less", g.op("Mul", upper, a), z)
        k0 = g.op("Add", g.op("Sub", k0, g.op("Cast", too_high, to=float_t)), g.op("Cast", too_low, to=float_t))
    return g.op("Clip", k0, zero, top)


def build_onnx(model: IntegerModel, *, with_codes: bool = False, exact: bool = True) -> Any:
    """The ``onnx.ModelProto`` of ``model`` (see the module docstring)."""
    onnx = _require("onnx")
    helper, tp = onnx.helper, onnx.TensorProto
    g = _Graph(onnx)
    if model.int8:
        assert model.w1_scale is not None  # int8 models carry their weight scales
        p = g.op("QuantizeLinear", "x", g.const("input_step", np.array(model.input_step, np.float32)),
                 g.const("input_zero", np.array(model.input_zero, np.uint8)))
        acc = g.op("MatMulInteger", p, g.const("w1_q", np.ascontiguousarray(model.w1.T)))
        scaled_acc = g.op("Mul", g.op("Cast", acc, to=tp.FLOAT), g.const("w1_scale", model.w1_scale))
        z = g.op("Add", scaled_acc, g.const("b1", model.b1), out="preact")
        codes = _staircase(g, z, model.quant, True, exact)
    else:
        z = g.op("Gemm", "x", g.const("w1", model.w1), g.const("b1", model.b1), transB=1, out="preact")
        codes = _staircase(g, z, model.quant, False, exact)
    g.op("Gemm", codes, g.const("w2", model.w2), g.const("b2", model.b2), transB=1, out="logits")
    n = "N"
    outputs = [helper.make_tensor_value_info("logits", tp.FLOAT, [n, model.num_classes])]
    if with_codes:
        g.op("Cast", codes, to=tp.UINT8, out="codes")
        outputs.append(helper.make_tensor_value_info("codes", tp.UINT8, [n, model.hidden]))
        outputs.append(helper.make_tensor_value_info("preact", tp.FLOAT, [n, model.hidden]))
    inputs = [helper.make_tensor_value_info("x", tp.FLOAT, [n, model.in_features])]
    graph = helper.make_graph(g.nodes, f"coarsegrad_{model.source or 'model'}", inputs, outputs, g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="coarsegrad", ir_version=IR_VERSION)
    meta = {"bits": str(model.bits), "alpha": repr(model.alpha), "rounding": model.rounding, "weights": "int8" if model.int8 else "float32",
            "exact_codes": str(exact or model.int8)}
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    return proto


def to_onnx(
    model: nn.Module | IntegerModel,
    path: str | Path,
    *,
    with_codes: bool = False,
    exact: bool = True,
    input_shape: tuple[int, ...] | None = None,
) -> Path:
    """Write ``model`` (a network or its :func:`to_integer` form) as ONNX to ``path``.

    A TwoLayerNet or quantized MLP goes through its integer form: outputs ``logits``;
    with ``with_codes`` also ``codes`` (uint8) and ``preact`` (float32 pre-activations).
    Int8 networks: pass ``to_integer(model, weights="int8", input_range=...)``. A
    :class:`~coarsegrad.models.networks.LeNet5` is written by
    :func:`coarsegrad.export.onnx_lenet.build_lenet_onnx`. Any other model (a class of
    your own made by :func:`coarsegrad.quantize_model`, an ``nn.Sequential``) is traced by
    :func:`coarsegrad.export.onnx_traced.build_traced_onnx` and needs ``input_shape`` (per
    sample, e.g. ``(1, 28, 28)``). For these two, ``with_codes`` adds ``preact1..k``, the
    inputs of the k QuantReLU calls. The write is atomic.
    """
    from coarsegrad.io.records import atomic_write_bytes
    from coarsegrad.models.networks import MLP, LeNet5, TwoLayerNet
    from coarsegrad.quant.convert import check_fixed

    if not isinstance(model, IntegerModel):
        check_fixed(model)
    if isinstance(model, IntegerModel) or (isinstance(model, (TwoLayerNet, MLP)) and isinstance(model.act, QuantReLU)):
        integer = model if isinstance(model, IntegerModel) else to_integer(model)
        proto = build_onnx(integer, with_codes=with_codes, exact=exact)
    elif type(model) is LeNet5:
        from coarsegrad.export.onnx_lenet import build_lenet_onnx

        proto = build_lenet_onnx(model, with_codes=with_codes, exact=exact)
    else:
        from coarsegrad.export.onnx_traced import build_traced_onnx

        if input_shape is None:
            raise ConfigError("input_shape", f"ONNX export of a {type(model).__name__} needs input_shape "
                              "(per sample, e.g. (1, 28, 28))")
        proto = build_traced_onnx(model, input_shape, exact=exact, with_preact=with_codes)
    path = Path(path)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


def onnx_session(path_or_proto: str | Path | Any, threads: int | None = None, spin: bool = False) -> Any:
    """An onnxruntime CPU ``InferenceSession``.

    ``threads``: intra-op threads (None = ORT's default). ``spin=False`` stops idle ORT
    threads from busy-waiting, which would steal cores from other work in the process.
    """
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only (no notes about unused initializers)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if isinstance(path_or_proto, (str, Path)):
        source: Any = str(path_or_proto)
    else:
        source = path_or_proto.SerializeToString()
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        where = source if isinstance(source, str) else "<onnx model>"
        raise DataError(where, f"onnxruntime cannot load it: {str(exc).splitlines()[0][:300]}") from None


def run_onnx(session: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``session`` on float32 ``x`` [N, d]; returns {output name: array}."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"x": x}), strict=False))
