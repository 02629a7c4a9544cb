"""ONNX export of :class:`~coarsegrad.models.networks.LeNet5`, standard operators only (opset 17).

LeNet-5 is one case of the general traced export
(:func:`coarsegrad.export.onnx_traced.build_traced_onnx`); this module adds its checks
(one shared spec, QuantReLU activations) and its metadata. Each batch-norm (no affine,
eval mode) is folded into the Conv/Gemm before it: with s = 1/√(var + ε) per channel
(float64, then float32),

    w' = w·s,   b' = (b − mean)·s,      so  w'·a + b' = BN(w·a + b) up to rounding.

Graph (x float32 [N, 784] → logits float32 [N, K]; with ``with_preact`` also
``preact1`` [N, c₁, 24, 24], ``preact2`` [N, c₂, 8, 8], ``preact3`` [N, h], the values the
staircases threshold):

    a₀ = Reshape(x, [N, 1, 28, 28])
    z₁ = Conv(a₀, w₁', b₁')   a₁ = MaxPool₂(α·c(z₁))
    z₂ = Conv(a₁, w₂', b₂')   a₂ = MaxPool₂(α·c(z₂))
    z₃ = Gemm(Reshape(a₂, [N, 16·c₂]), w₃', b₃')      logits = Gemm(α·c(z₃), w₄, b₄)

c is the staircase of :func:`coarsegrad.export.onnx_graph._staircase` (comparisons
against the spec's float32 thresholds fl((j+o)α), exact for ``exact=True``), and α·c is
the same float32 product the PyTorch layer computes. The folded pre-activations differ
from PyTorch's (z − mean)·s by float rounding only, so a code can differ where z lies
within rounding of a threshold (counted by the agreement tests).
"""

from __future__ import annotations

from typing import Any

from coarsegrad.errors import ConfigError
from coarsegrad.export.onnx_traced import build_traced_onnx
from coarsegrad.export.traced import fold_batchnorm
from coarsegrad.models.networks import LeNet5
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.spec import ActQuant

__all__ = ["build_lenet_onnx", "fold_batchnorm", "lenet_quant"]


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
    """The ``onnx.ModelProto`` of ``model`` (module docstring), built by the general traced
    path :func:`coarsegrad.export.onnx_traced.build_traced_onnx`. ``with_codes`` is an alias
    of ``with_preact`` (the CLI flag's name)."""
    if type(model).forward is not LeNet5.forward:
        raise ConfigError("model", "ONNX export covers LeNet5's own forward, not a subclass overriding it")
    quant = lenet_quant(model)
    return build_traced_onnx(model, (28 * 28,), exact=exact, with_preact=with_preact or with_codes,
                             name="coarsegrad_lenet5",
                             props={"architecture": "lenet5", "bits": str(quant.bits), "alpha": repr(quant.alpha),
                                    "rounding": quant.rounding})
