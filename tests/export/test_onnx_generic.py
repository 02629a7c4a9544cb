"""ONNX export of plain ``nn.Sequential`` stacks made by ``quantize_model``.

Oracle: the PyTorch model itself. Codes may differ only where PyTorch's pre-activation lies
within float32 rounding of a threshold (the folded batch-norm rounds differently); on these
seeds no such case arises and predictions agree on every row, which is asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import coarsegrad as cg
from coarsegrad.data.datasets import find_dataset
from coarsegrad.errors import ConfigError
from coarsegrad.export.onnx_graph import onnx_session, run_onnx, to_onnx
from coarsegrad.export.onnx_sequential import build_sequential_onnx

pytest.importorskip("onnxruntime")


def _randomise_bn(model: nn.Module, g: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.2, 3.0, generator=g)
            if m.affine:
                m.weight.data.uniform_(0.5, 2.0, generator=g)
                m.bias.data.uniform_(-0.5, 0.5, generator=g)


def test_quantized_mlp_matches_pytorch_on_mnist(tmp_path):
    if find_dataset("mnist") is None:
        pytest.skip("MNIST not found (set COARSEGRAD_DATA)")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    cg.quantize_model(model, cg.ActQuant(bits=2))
    _randomise_bn(model, torch.Generator().manual_seed(1))
    model.eval()
    x = cg.prepare_dataset("mnist").x_test[:500]
    path = to_onnx(model, tmp_path / "mlp.onnx", input_shape=(784,))
    got = run_onnx(onnx_session(path), x.numpy())["logits"]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (500, 10)
    assert np.array_equal(got.argmax(1), want.argmax(1))
    assert np.allclose(got, want, atol=1e-4)
    # the quantized layer really quantizes: hidden activations take at most L + 1 values
    with torch.no_grad():
        hidden = model[:4](x)
    assert len(torch.unique(hidden)) <= 4


def test_conv_stack_nearest_matches_pytorch():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Sequential(nn.Flatten(), nn.Linear(4 * 13 * 13, 10)))
    cg.quantize_model(model, cg.ActQuant(bits=2, rounding="nearest"))
    _randomise_bn(model, torch.Generator().manual_seed(3))
    model.eval()
    x = torch.randn(200, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    got = run_onnx(onnx_session(build_sequential_onnx(model, (1, 28, 28))), x.numpy())["logits"]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.array_equal(got.argmax(1), want.argmax(1))
    assert np.allclose(got, want, atol=1e-4)


def test_unsupported_layer_and_missing_shape(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    with pytest.raises(ConfigError, match=r"cannot export Tanh at 1; supported: Linear") as info:
        build_sequential_onnx(model, (4,))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="input_shape"):
        to_onnx(nn.Sequential(nn.Linear(4, 2)), tmp_path / "m.onnx")
