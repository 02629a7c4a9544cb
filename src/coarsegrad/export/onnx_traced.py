"""ONNX export of any model ``torch.fx`` can trace (e.g. made by :func:`coarsegrad.quantize_model`).

The traced graph (:mod:`coarsegrad.export.traced`) is walked node by node; each op has
one emitter, standard operators only (opset 17):

    Linear                 → Gemm(a, W, b, transB=1)   (MatMul + Add on inputs of rank > 2)
    Conv2d                 → Conv (stride, padding, dilation, groups; zero padding only)
    Linear/Conv2d → BN     → one Gemm/Conv, the eval batch-norm folded in
                             (:func:`coarsegrad.export.traced.fold_batchnorm`) when the BN
                             is the layer's only user; any other BN → BatchNormalization (eval)
    QuantReLU              → α·c(z), c the staircase of its ActQuant
                             (:func:`coarsegrad.export.onnx_graph._staircase`, every rounding)
    ReLU, F.relu, torch.relu, x.relu()          → Relu
    MaxPool2d, F.max_pool2d / AvgPool2d, F.avg_pool2d → MaxPool / AveragePool
    Flatten, torch.flatten, x.flatten, x.view, x.reshape → Reshape to the traced
                             per-sample shape (the batch must stay dimension 0)
    +, torch.add, x.add / *, torch.mul, x.mul  → Add / Mul (tensors or constants)
    torch.cat              → Concat;   Identity, Dropout (eval) → Identity

Anything else is one ConfigError naming it and this list. Input ``x`` float32
[N, ∏input_shape] (as :func:`~coarsegrad.export.onnx_graph.run_onnx` feeds it),
reshaped to [N, *input_shape]; output ``logits``; with ``with_preact`` also
``preact1..k``, the inputs of the k QuantReLU calls. The folded pre-activations differ
from PyTorch's by float rounding only, so a code can differ where z lies within rounding
of a threshold (:mod:`coarsegrad.export.layer_agreement` counts them).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from coarsegrad.errors import ConfigError
from coarsegrad.export.integer import check_float_weights
from coarsegrad.export.onnx_graph import IR_VERSION, OPSET, _Graph, _require, _staircase
from coarsegrad.export.traced import fold_batchnorm, folded_norm, module, node_values, sites, trace
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.convert import check_fixed
from coarsegrad.quant.spec import ActQuant

SUPPORTED = ("Linear, Conv2d, BatchNorm1d/2d (folded into a Linear/Conv2d it follows), QuantReLU, ReLU/F.relu/"
             "torch.relu, MaxPool2d/F.max_pool2d, AvgPool2d/F.avg_pool2d, Flatten/flatten/view/reshape, "
             "add, mul, cat, Identity, Dropout")


@dataclass
class _Ctx:
    """The graph being built: ONNX names of the nodes emitted so far and the traced values."""

    g: _Graph
    gm: fx.GraphModule
    values: dict[str, Any]
    exact: bool
    batch: int
    names: dict[str, str] = field(default_factory=dict)
    tags: dict[ActQuant, str] = field(default_factory=dict)

    def arg(self, node: fx.Node, a: Any) -> str:
        """The ONNX name of argument ``a``: an emitted tensor, or a float32 constant."""
        if isinstance(a, fx.Node):
            if a.name not in self.names:
                raise _unsupported(node, f"its argument {a.name} is a size, not a tensor", self.gm)
            return self.names[a.name]
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            return self.g.const(f"const_{node.name}_{len(self.g.inits)}", np.array(a, dtype=np.float32))
        raise _unsupported(node, f"argument {a!r}", self.gm)

    def rank(self, node: Any) -> int:
        return int(self.values[node.name].dim())


def _describe(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(str(node.target))).__name__} at {node.target}"
    if node.op == "call_method":
        return f"method .{node.target}() at node {node.name}"
    return f"{getattr(node.target, '__name__', node.target)} at node {node.name}"


def _unsupported(node: fx.Node, why: str = "", gm: fx.GraphModule | None = None) -> ConfigError:
    what = _describe(node, gm) if gm is not None else f"node {node.name}"
    return ConfigError("model", f"cannot export {what}{f' ({why})' if why else ''}; supported: {SUPPORTED}")


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]


def _weights(ctx: _Ctx, node: fx.Node, layer: nn.Conv2d | nn.Linear) -> tuple[str, str]:
    norm = folded_norm(ctx.gm, node)
    if norm is not None:
        w, b = fold_batchnorm(layer, norm)
    else:
        w = layer.weight.detach().float().numpy()
        b = layer.bias.detach().float().numpy() if layer.bias is not None else np.zeros(w.shape[0], np.float32)
    return ctx.g.const(f"{node.name}.weight", w), ctx.g.const(f"{node.name}.bias", b)


def _linear(ctx: _Ctx, node: fx.Node, layer: Any) -> str:
    w, b = _weights(ctx, node, layer)
    a = ctx.arg(node, node.args[0])
    if ctx.rank(node.args[0]) == 2:
        return ctx.g.op("Gemm", a, w, b, transB=1)
    wt = ctx.g.const(f"{node.name}.weight_t", np.ascontiguousarray(ctx.g.values[w].T))
    return ctx.g.op("Add", ctx.g.op("MatMul", a, wt), b)


def _conv(ctx: _Ctx, node: fx.Node, conv: Any) -> str:
    if conv.padding_mode != "zeros":
        raise _unsupported(node, f"padding_mode={conv.padding_mode!r}", ctx.gm)
    k, d = _pair(conv.kernel_size), _pair(conv.dilation)
    if isinstance(conv.padding, str):  # 'valid' or 'same' (stride 1): the left side gets total//2
        total = [0, 0] if conv.padding == "valid" else [di * (ki - 1) for di, ki in zip(d, k, strict=True)]
        pads = [t // 2 for t in total] + [t - t // 2 for t in total]
    else:
        pads = _pair(conv.padding) * 2
    w, b = _weights(ctx, node, conv)
    return ctx.g.op("Conv", ctx.arg(node, node.args[0]), w, b, kernel_shape=k, strides=_pair(conv.stride),
                    dilations=d, pads=pads, group=conv.groups)


def _batchnorm(ctx: _Ctx, node: fx.Node, norm: Any) -> str:
    producer = node.args[0]
    if isinstance(producer, fx.Node) and folded_norm(ctx.gm, producer) is norm:
        return ctx.names[producer.name]  # already folded into the layer before it
    if norm.running_var is None:
        raise _unsupported(node, "batch-norm without running statistics", ctx.gm)
    c = norm.num_features
    scale = norm.weight.detach().float().numpy() if norm.affine else np.ones(c, np.float32)
    shift = norm.bias.detach().float().numpy() if norm.affine else np.zeros(c, np.float32)
    consts = [ctx.g.const(f"{node.name}.{k}", v) for k, v in (
        ("scale", scale), ("shift", shift), ("mean", norm.running_mean.detach().float().numpy()),
        ("var", norm.running_var.detach().float().numpy()))]
    return ctx.g.op("BatchNormalization", ctx.arg(node, node.args[0]), *consts, epsilon=float(norm.eps))


def _quant_relu(ctx: _Ctx, node: fx.Node, act: Any) -> str:
    quant = act.quant
    tag = ctx.tags.setdefault(quant, f"_q{len(ctx.tags)}")
    codes = _staircase(ctx.g, ctx.arg(node, node.args[0]), quant, False, ctx.exact, tag=tag)
    return ctx.g.op("Mul", codes, ctx.g.const(f"alpha{tag}", np.array(quant.alpha, dtype=np.float32)))


def _relu(ctx: _Ctx, node: fx.Node, _m: Any) -> str:
    return ctx.g.op("Relu", ctx.arg(node, node.args[0]))


def _identity(ctx: _Ctx, node: fx.Node, _m: Any) -> str:
    return ctx.g.op("Identity", ctx.arg(node, node.args[0]))


def _pool(ctx: _Ctx, node: fx.Node, pool: Any) -> str:
    if getattr(pool, "return_indices", False) or getattr(pool, "divisor_override", None) is not None:
        raise _unsupported(node, "return_indices / divisor_override", ctx.gm)
    stride = pool.stride if pool.stride else pool.kernel_size
    attrs: dict[str, Any] = {"kernel_shape": _pair(pool.kernel_size), "strides": _pair(stride), "pads": _pair(pool.padding) * 2,
             "ceil_mode": int(pool.ceil_mode)}
    if isinstance(pool, nn.MaxPool2d):
        return ctx.g.op("MaxPool", ctx.arg(node, node.args[0]), dilations=_pair(pool.dilation), **attrs)
    return ctx.g.op("AveragePool", ctx.arg(node, node.args[0]), count_include_pad=int(pool.count_include_pad), **attrs)


def _functional_pool(kind: type[nn.Module], names: tuple[str, ...]) -> Callable[[_Ctx, fx.Node, Any], str]:
    """F.max_pool2d / F.avg_pool2d as the module with the same arguments (one emitter)."""
    def emit(ctx: _Ctx, node: fx.Node, _m: Any) -> str:
        kwargs = dict(zip(names, node.args[1:], strict=False)) | dict(node.kwargs)
        return _pool(ctx, node, kind(**kwargs))
    return emit


def _reshape(ctx: _Ctx, node: fx.Node, _m: Any) -> str:
    shape = tuple(ctx.values[node.name].shape)
    if shape[0] != ctx.batch:
        raise _unsupported(node, "the batch must stay dimension 0", ctx.gm)
    target = ctx.g.const(f"{node.name}.shape", np.array([-1, *shape[1:]], dtype=np.int64))
    return ctx.g.op("Reshape", ctx.arg(node, node.args[0]), target)


def _binary(kind: str) -> Callable[[_Ctx, fx.Node, Any], str]:
    def emit(ctx: _Ctx, node: fx.Node, _m: Any) -> str:
        if set(node.kwargs) - {"other"} or len(node.args) + len(node.kwargs) != 2:
            raise _unsupported(node, "only two operands (no alpha, no out)", ctx.gm)
        a, b = [*node.args, *node.kwargs.values()]
        return ctx.g.op(kind, ctx.arg(node, a), ctx.arg(node, b))
    return emit


def _cat(ctx: _Ctx, node: fx.Node, _m: Any) -> str:
    tensors: Any = node.args[0] if node.args else node.kwargs["tensors"]
    dim: Any = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    dim = int(dim) % ctx.rank(node)
    if dim == 0:
        raise _unsupported(node, "concatenation along the batch", ctx.gm)
    return ctx.g.op("Concat", *[ctx.arg(node, t) for t in tensors], axis=dim)


Emitter = Callable[[_Ctx, fx.Node, Any], str]
MODULES: dict[type, Emitter] = {
    nn.Linear: _linear, nn.Conv2d: _conv, nn.BatchNorm1d: _batchnorm, nn.BatchNorm2d: _batchnorm,
    QuantReLU: _quant_relu, nn.ReLU: _relu, nn.MaxPool2d: _pool, nn.AvgPool2d: _pool, nn.Flatten: _reshape,
    nn.Identity: _identity, nn.Dropout: _identity,
}
FUNCTIONS: dict[Any, Emitter] = {
    F.relu: _relu, torch.relu: _relu, torch.flatten: _reshape, torch.cat: _cat,
    F.max_pool2d: _functional_pool(nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                                  "return_indices")),
    F.avg_pool2d: _functional_pool(nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode",
                                                  "count_include_pad", "divisor_override")),
    operator.add: _binary("Add"), torch.add: _binary("Add"), operator.mul: _binary("Mul"), torch.mul: _binary("Mul"),
}
METHODS: dict[str, Emitter] = {"relu": _relu, "flatten": _reshape, "view": _reshape, "reshape": _reshape,
                               "add": _binary("Add"), "mul": _binary("Mul")}


def _emitter(node: fx.Node, gm: fx.GraphModule) -> Emitter | None:
    if node.op == "call_module":
        return MODULES.get(type(gm.get_submodule(str(node.target))))
    if node.op == "call_method":
        return METHODS.get(str(node.target))
    try:
        return FUNCTIONS.get(node.target)
    except TypeError:  # an unhashable target
        return None


def build_traced_onnx(model: nn.Module, input_shape: tuple[int, ...], *, exact: bool = True,
                      with_preact: bool = False, name: str = "coarsegrad_traced",
                      props: dict[str, str] | None = None) -> Any:
    """The ``onnx.ModelProto`` of ``model`` on inputs of per-sample shape ``input_shape``
    (module docstring); ConfigError naming the first op it cannot export."""
    onnx = _require("onnx")
    helper, tp = onnx.helper, onnx.TensorProto
    check_float_weights(model)  # QuantLinear is an nn.Linear: its latent weights are not the model
    check_fixed(model)  # a learned (LSQ/PACT) step is not the spec's α until frozen
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ConfigError("input_shape", f"must be positive per-sample dimensions, got {input_shape!r}")
    gm = trace(model, leaves=tuple(MODULES))
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConfigError("model", f"ONNX export needs a forward with one input, got {len(placeholders)}")
    values = node_values(gm, torch.zeros(2, *shape))  # the batch size 2 tells the batch dimension apart
    ctx = _Ctx(_Graph(onnx), gm, values, exact, batch=2)
    x = "x" if len(shape) == 1 else ctx.g.op("Reshape", "x", ctx.g.const("input_shape", np.array([-1, *shape], np.int64)))
    ctx.names[placeholders[0].name] = x
    result: fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            result = node.args[0] if isinstance(node.args[0], fx.Node) else None
            if result is None or result.name not in ctx.names:
                raise ConfigError("model", "ONNX export needs a forward that returns one tensor")
            continue
        if node.op == "get_attr":
            ctx.names[node.name] = ctx.g.const(node.name, values[node.name].detach().float().numpy())
            continue
        if not isinstance(values[node.name], torch.Tensor):  # x.size(0), x.shape[0]: read by Reshape's traced shape
            continue
        emit = _emitter(node, gm)
        if emit is None:
            raise _unsupported(node, gm=gm)
        ctx.names[node.name] = emit(ctx, node, module(gm, node))
    assert result is not None  # every fx graph ends in an output node
    ctx.g.op("Identity", ctx.names[result.name], out="logits")
    n = "N"
    outputs = [helper.make_tensor_value_info("logits", tp.FLOAT, [n, *values[result.name].shape[1:]])]
    quant_sites = sites(gm)
    if with_preact:
        for site in quant_sites:
            ctx.g.op("Identity", ctx.names[site.preact], out=f"preact{site.index}")
            outputs.append(helper.make_tensor_value_info(f"preact{site.index}", tp.FLOAT,
                                                         [n, *values[site.preact].shape[1:]]))
    inputs = [helper.make_tensor_value_info("x", tp.FLOAT, [n, math.prod(shape)])]
    graph = helper.make_graph(ctx.g.nodes, name, inputs, outputs, ctx.g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="coarsegrad", ir_version=IR_VERSION)
    meta = {"architecture": "traced", "input_shape": repr(shape), "weights": "float32", "exact_codes": str(exact),
            "batchnorm": "folded", "quant": ";".join(sorted({s.quant.describe() for s in quant_sites})),
            "preact_modules": ",".join(s.module for s in quant_sites)} | (props or {})
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    return proto
