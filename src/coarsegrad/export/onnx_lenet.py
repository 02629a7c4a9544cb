"""ONNX export of :class:`~coarsegrad.models.networks.LeNet5`, standard operators only (opset 17).

Each batch-norm (no affine, eval mode) is folded into the Conv/Gemm before it:
with s = 1/√(var + ε) per channel (float64, then float32),

    w' = w·s,   b' = (b − mean)·s,      so  w'·a + b' = BN(w·a + b) up to rounding.

Graph (x float32 [N, 784] → logits float32 [N, K]; with ``with_preact`` also
``preact1`` [N, c₁, 24, 24], ``preact2`` [N, c₂, 8, 8], ``preact3`` [N, h], the values the
staircases threshold):

    a₀ = Reshape(x, [N, 1, 28, 28])
    z₁ = Conv(a₀, w₁', b₁')   a₁ = MaxPool₂(α·c(z₁))
    z₂ = Conv(a₁, w₂', b₂')   a₂ = MaxPool₂(α·c(z₂))
    z₃ = Gemm(Flatten(a₂), w₃', b₃')      logits = Gemm(α·c(z₃), w₄, b₄)

c is the staircase of :func:`coarsegrad.export.onnx_graph._staircase` (comparisons
against the spec's float32 thresholds fl((j+o)α), exact for ``exact=True``), and α·c is
the same float32 product the PyTorch layer computes. The folded pre-activations differ
from PyTorch's (z − mean)·s by float rounding only, so a code can differ where z lies
within rounding of a threshold (counted by the agreement tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from coarsegrad.errors import ConfigError
from coarsegrad.export.integer import check_float_weights
from coarsegrad.export.onnx_graph import IR_VERSION, OPSET, _Graph, _require, _staircase
from coarsegrad.models.networks import LeNet5
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.spec import ActQuant


def fold_batchnorm(layer: nn.Module, norm: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """(w', b') float32 of ``layer`` (Conv2d or Linear) followed by ``norm`` (BatchNorm, eval
    statistics; with affine γ, β: w' = w·sγ, b' = (b − mean)·sγ + β)."""
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise ConfigError("model", f"can fold a batch-norm into a Conv2d or Linear only, got {layer}")
    if not isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)) or norm.running_var is None:
        raise ConfigError("model", f"can fold only a BatchNorm that tracks statistics, got {norm}")
    assert norm.running_mean is not None
    w = layer.weight.detach().to(torch.float64)
    b = (layer.bias.detach().to(torch.float64) if layer.bias is not None
         else torch.zeros(w.shape[0], dtype=torch.float64))
    s = 1.0 / torch.sqrt(norm.running_var.to(torch.float64) + norm.eps)
    if norm.affine:
        s = s * norm.weight.detach().to(torch.float64)
    b_f = (b - norm.running_mean.to(torch.float64)) * s
    if norm.affine:
        b_f = b_f + norm.bias.detach().to(torch.float64)
    w_f = w * s.reshape(-1, *([1] * (w.dim() - 1)))
    return w_f.to(torch.float32).numpy(), b_f.to(torch.float32).numpy()


def lenet_quant(model: LeNet5) -> ActQuant:
    """The one spec all three activations of ``model`` share (ConfigError otherwise)."""
    acts = [model.features[2], model.features[6], model.classifier[2]]
    if not all(isinstance(a, QuantReLU) for a in acts):
        raise ConfigError("model", "ONNX export of LeNet-5 needs QuantReLU activations (not the float network)")
    specs = {a.quant for a in acts if isinstance(a, QuantReLU)}
    if len(specs) != 1:
        raise ConfigError("model", "ONNX export of LeNet-5 needs one spec shared by its three activations")
    return specs.pop()


def build_lenet_onnx(model: LeNet5, *, with_preact: bool = False, exact: bool = True,
                     with_codes: bool = False) -> Any:
    """The ``onnx.ModelProto`` of ``model`` (module docstring). ``with_codes`` is an alias
    of ``with_preact`` (the CLI flag's name)."""
    onnx = _require("onnx")
    helper, tp = onnx.helper, onnx.TensorProto
    check_float_weights(model)
    if type(model).forward is not LeNet5.forward:
        raise ConfigError("model", "ONNX export covers LeNet5's own forward, not a subclass overriding it")
    quant = lenet_quant(model)
    f, c = model.features, model.classifier
    g = _Graph(onnx)
    alpha = g.const("alpha", np.array(quant.alpha, dtype=np.float32))

    def quantized(z: str) -> str:
        return g.op("Mul", _staircase(g, z, quant, False, exact), alpha)

    a = g.op("Reshape", "x", g.const("image_shape", np.array([-1, 1, 28, 28], dtype=np.int64)))
    for i, (conv, norm) in enumerate(((f[0], f[1]), (f[4], f[5])), start=1):
        w, b = fold_batchnorm(conv, norm)
        z = g.op("Conv", a, g.const(f"w{i}", w), g.const(f"b{i}", b), kernel_shape=[5, 5], out=f"preact{i}")
        a = g.op("MaxPool", quantized(z), kernel_shape=[2, 2], strides=[2, 2])
    w, b = fold_batchnorm(c[0], c[1])
    z = g.op("Gemm", g.op("Flatten", a, axis=1), g.const("w3", w), g.const("b3", b), transB=1, out="preact3")
    last = c[3]
    assert isinstance(last, nn.Linear)  # LeNet5 builds it so
    g.op("Gemm", quantized(z), g.const("w4", last.weight.detach().float().numpy()),
         g.const("b4", last.bias.detach().float().numpy()), transB=1, out="logits")
    n = "N"
    outputs = [helper.make_tensor_value_info("logits", tp.FLOAT, [n, last.out_features])]
    if with_preact or with_codes:
        c1, c2, h = f[0].out_channels, f[4].out_channels, c[0].out_features
        for name, shape in (("preact1", [n, c1, 24, 24]), ("preact2", [n, c2, 8, 8]), ("preact3", [n, h])):
            outputs.append(helper.make_tensor_value_info(name, tp.FLOAT, shape))
    inputs = [helper.make_tensor_value_info("x", tp.FLOAT, [n, 28 * 28])]
    graph = helper.make_graph(g.nodes, "coarsegrad_lenet5", inputs, outputs, g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="coarsegrad", ir_version=IR_VERSION)
    helper.set_model_props(proto, {"architecture": "lenet5", "bits": str(quant.bits), "alpha": repr(quant.alpha),
                                   "rounding": quant.rounding, "weights": "float32",
                                   "exact_codes": str(exact), "batchnorm": "folded"})
    onnx.checker.check_model(proto)
    return proto
