"""ONNX export of a plain ``nn.Sequential`` (e.g. made by :func:`coarsegrad.quantize_model`).

Layers, in order (nested Sequentials flattened), each mapped to standard operators (opset 17):

    Linear               → Gemm(a, W, b, transB=1)
    Conv2d               → Conv (stride, padding, dilation, groups; zero padding only)
    Linear/Conv2d + BN   → one Gemm/Conv with the eval batch-norm folded in
                           (:func:`coarsegrad.export.onnx_lenet.fold_batchnorm`, affine or not)
    QuantReLU            → α·c(z), c the staircase of :func:`coarsegrad.export.onnx_graph._staircase`
    ReLU                 → Relu;   MaxPool2d → MaxPool;   Flatten (start_dim=1) → Flatten

Input ``x`` float32 [N, ∏input_shape] (as :func:`~coarsegrad.export.onnx_graph.run_onnx`
feeds it), reshaped to [N, *input_shape]; output ``logits`` float32. The folded
pre-activations differ from PyTorch's by float rounding only, so a code can differ where
z lies within rounding of a threshold.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from coarsegrad.errors import ConfigError
from coarsegrad.export.integer import check_float_weights
from coarsegrad.export.onnx_graph import IR_VERSION, OPSET, _Graph, _require, _staircase
from coarsegrad.export.onnx_lenet import fold_batchnorm
from coarsegrad.quant.autograd import QuantReLU

SUPPORTED = "Linear, Conv2d, BatchNorm1d/2d (after Linear/Conv2d), QuantReLU, ReLU, MaxPool2d, Flatten"


def _flatten(model: nn.Module) -> list[nn.Module]:
    out: list[nn.Module] = []
    for layer in model.children():
        out.extend(_flatten(layer) if isinstance(layer, nn.Sequential) else [layer])
    return out


def _unsupported(layer: nn.Module, index: int, why: str = "") -> ConfigError:
    detail = f" ({why})" if why else ""
    return ConfigError("model", f"cannot export {type(layer).__name__} at {index}{detail}; supported: {SUPPORTED}")


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]


def _conv_attrs(conv: nn.Conv2d, index: int) -> dict[str, Any]:
    if conv.padding_mode != "zeros":
        raise _unsupported(conv, index, f"padding_mode={conv.padding_mode!r}")
    k, d = _pair(conv.kernel_size), _pair(conv.dilation)
    if isinstance(conv.padding, str):  # 'valid' or 'same' (stride 1): left gets total//2
        total = [0, 0] if conv.padding == "valid" else [di * (ki - 1) for di, ki in zip(d, k, strict=True)]
        pads = [t // 2 for t in total] + [t - t // 2 for t in total]
    else:
        pads = _pair(conv.padding) * 2
    return {"kernel_shape": k, "strides": _pair(conv.stride), "dilations": d, "pads": pads, "group": conv.groups}


def _pool_attrs(pool: nn.MaxPool2d, index: int) -> dict[str, Any]:
    if pool.return_indices:
        raise _unsupported(pool, index, "return_indices=True")
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return {"kernel_shape": _pair(pool.kernel_size), "strides": _pair(stride), "pads": _pair(pool.padding) * 2,
            "dilations": _pair(pool.dilation), "ceil_mode": int(pool.ceil_mode)}


def build_sequential_onnx(model: nn.Sequential, input_shape: tuple[int, ...], *, exact: bool = True) -> Any:
    """The ``onnx.ModelProto`` of ``model`` on inputs of per-sample shape ``input_shape``
    (module docstring); ConfigError naming the first layer it cannot export."""
    onnx = _require("onnx")
    helper, tp = onnx.helper, onnx.TensorProto
    if not isinstance(model, nn.Sequential):
        raise ConfigError("model", f"build_sequential_onnx needs an nn.Sequential, got {type(model).__name__}")
    check_float_weights(model)
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ConfigError("input_shape", f"must be positive per-sample dimensions, got {input_shape!r}")
    layers = _flatten(model)
    g = _Graph(onnx)
    a = "x"
    if len(shape) > 1:
        a = g.op("Reshape", a, g.const("input_shape", np.array([-1, *shape], dtype=np.int64)))
    specs = set()
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            if isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d)):
                w, b = fold_batchnorm(layer, nxt)
                i += 1
            else:
                w = layer.weight.detach().float().numpy()
                b = (layer.bias.detach().float().numpy() if layer.bias is not None
                     else np.zeros(w.shape[0], np.float32))
            wn, bn = g.const(f"w{i}", w), g.const(f"b{i}", b)
            if isinstance(layer, nn.Linear):
                a = g.op("Gemm", a, wn, bn, transB=1)
            else:
                a = g.op("Conv", a, wn, bn, **_conv_attrs(layer, i))
        elif isinstance(layer, QuantReLU):
            q = layer.quant
            specs.add(q)
            alpha = g.const(f"alpha{i}", np.array(q.alpha, dtype=np.float32))
            sub = _Graph(onnx)  # _staircase names its constants by role; keep them per layer
            sub.count = g.count
            codes = _staircase(sub, a, q, False, exact)
            for init in sub.inits:
                init.name = f"{init.name}_{i}"
            rename = {n: f"{n}_{i}" for n in sub.values}
            for node in sub.nodes:
                node.input[:] = [rename.get(n, n) for n in node.input]
            g.nodes.extend(sub.nodes)
            g.inits.extend(sub.inits)
            g.count = sub.count
            a = g.op("Mul", codes, alpha)
        elif isinstance(layer, nn.ReLU):
            a = g.op("Relu", a)
        elif isinstance(layer, nn.MaxPool2d):
            a = g.op("MaxPool", a, **_pool_attrs(layer, i))
        elif isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise _unsupported(layer, i, "only start_dim=1, end_dim=-1")
            a = g.op("Flatten", a, axis=1)
        else:
            raise _unsupported(layer, i)
        i += 1
    g.op("Identity", a, out="logits")
    with torch.no_grad():
        out_shape = copy.deepcopy(model).eval()(torch.zeros(1, *shape)).shape[1:]
    n = "N"
    outputs = [helper.make_tensor_value_info("logits", tp.FLOAT, [n, *out_shape])]
    inputs = [helper.make_tensor_value_info("x", tp.FLOAT, [n, math.prod(shape)])]
    graph = helper.make_graph(g.nodes, "coarsegrad_sequential", inputs, outputs, g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="coarsegrad", ir_version=IR_VERSION)
    meta = {"architecture": "sequential", "input_shape": repr(shape), "weights": "float32",
            "exact_codes": str(exact), "batchnorm": "folded",
            "quant": ";".join(sorted(q.describe() for q in specs))}
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    return proto
