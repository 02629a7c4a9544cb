"""LeNet-5 as ONNX: batch-norm folded exactly (up to rounding), onnxruntime agrees with PyTorch on MNIST.

Oracle: the fold against BN(conv(a)) in float64; agreement counted per layer as in
:mod:`coarsegrad.export.agreement`: a code may differ only where PyTorch's pre-activation
lies within the float32 rounding bound of a threshold, a prediction only on a sample
with such a code difference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import coarsegrad as cg
from coarsegrad.data.datasets import find_dataset
from coarsegrad.export.onnx_graph import onnx_session, run_onnx
from coarsegrad.export.onnx_lenet import build_lenet_onnx, fold_batchnorm
from coarsegrad.models.networks import LeNet5

pytest.importorskip("onnxruntime")
U32 = 2.0 ** -24
QUANTS = [cg.ActQuant(2), cg.ActQuant(3, alpha=0.3, rounding="nearest")]


def mnist(split: str, n: int, offset: int = 0) -> torch.Tensor:
    if find_dataset("mnist") is None:
        pytest.skip("MNIST not found (set COARSEGRAD_DATA)")
    images, _ = cg.load_dataset("mnist", split)
    x = torch.as_tensor(np.asarray(images[offset:offset + n]), dtype=torch.float32).reshape(n, -1) / 255
    return (x - 0.1307) / 0.3081


def lenet(quant: cg.ActQuant, seed: int = 7) -> LeNet5:
    """Seeded random weights; batch-norm statistics from 512 MNIST training images (non-trivial)."""
    model = LeNet5(10, generator=torch.Generator().manual_seed(seed), quant=quant).train()
    with torch.no_grad():
        model(mnist("train", 512))
    return model.eval()


def test_fold_matches_batchnorm_in_float64():
    model = LeNet5(10, channels=(3, 4), hidden=6, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for norm in (model.features[1], model.classifier[1]):
        norm.running_mean.uniform_(-2, 2, generator=g)
        norm.running_var.uniform_(0.1, 4, generator=g)
    a = torch.randn(5, 1, 28, 28, generator=g, dtype=torch.float64)
    conv, norm = model.features[0], model.features[1]
    want = (F.conv2d(a, conv.weight.double(), conv.bias.double()) - norm.running_mean.double()[:, None, None]) \
        / torch.sqrt(norm.running_var.double()[:, None, None] + norm.eps)
    w, b = fold_batchnorm(conv, norm)
    got = F.conv2d(a, torch.from_numpy(w).double(), torch.from_numpy(b).double())
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6) and not torch.allclose(got, F.conv2d(
        a, conv.weight.double(), conv.bias.double()), atol=1e-2)
    h = torch.randn(5, 16 * 4, generator=g, dtype=torch.float64)
    fc, norm = model.classifier[0], model.classifier[1]
    want = (h @ fc.weight.double().T + fc.bias.double() - norm.running_mean.double()) \
        / torch.sqrt(norm.running_var.double() + norm.eps)
    w, b = fold_batchnorm(fc, norm)
    assert torch.allclose(h @ torch.from_numpy(w).double().T + torch.from_numpy(b).double(), want, rtol=1e-6, atol=1e-6)


def _torch_layers(model: LeNet5, x: torch.Tensor):
    """PyTorch's (layer input a, pre-activation z) of the three quantized layers, and its logits."""
    f, c = model.features, model.classifier
    seen: dict[int, torch.Tensor] = {}
    modules = [f[0], f[2], f[4], f[6], c[0], c[2]]
    hooks = [m.register_forward_hook(lambda _m, inp, _o, i=i: seen.__setitem__(i, inp[0].detach()))
             for i, m in enumerate(modules)]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return [(seen[0], seen[1]), (seen[2], seen[3]), (seen[4], seen[5])], logits


def _tolerance(layer, norm, a: torch.Tensor) -> torch.Tensor:
    """2(d+8)·u·(Σ|w·s||a| + (|b| + |mean|)·s): both sides' float32 error bound (d = fan-in)."""
    s = 1.0 / torch.sqrt(norm.running_var.double() + norm.eps)
    spread = (layer.bias.double().abs() + norm.running_mean.double().abs()) * s
    w = layer.weight.double().abs() * s.reshape(-1, *([1] * (layer.weight.dim() - 1)))
    if isinstance(layer, torch.nn.Conv2d):
        bound = F.conv2d(a.double().abs(), w) + spread[:, None, None]
    else:
        bound = a.double().abs() @ w.T + spread
    return 2 * (w[0].numel() + 8) * U32 * bound


@pytest.mark.parametrize("quant", QUANTS, ids=lambda q: f"{q.bits}b-{q.rounding}")
def test_onnxruntime_agrees_with_pytorch_on_mnist(quant):
    model = lenet(quant)
    x = mnist("test", 300)
    layers, logits = _torch_layers(model, x)
    out = run_onnx(onnx_session(build_lenet_onnx(model, with_preact=True)), x.numpy())
    norms = [(model.features[0], model.features[1]), (model.features[4], model.features[5]),
             (model.classifier[0], model.classifier[1])]
    edges = torch.tensor(quant.thresholds(torch.float32), dtype=torch.float64)
    explained = torch.zeros(len(x), dtype=torch.bool)  # samples with an earlier (near-threshold) code difference
    counts = []
    for i, ((a, z_t), (layer, norm)) in enumerate(zip(layers, norms, strict=True), start=1):
        z_o = torch.from_numpy(out[f"preact{i}"])
        differ = cg.staircase_codes(z_t, quant) != cg.staircase_codes(z_o, quant)
        differ = differ.reshape(len(x), -1) & ~explained[:, None]
        near = ((z_t.double()[..., None] - edges).abs().min(-1).values <= _tolerance(layer, norm, a))
        assert not (differ & ~near.reshape(len(x), -1)).any(), f"layer {i}: a code differs away from any threshold"
        counts.append(int(differ.sum()))
        explained |= differ.any(1)
    pred_t, pred_o = logits.argmax(1), torch.from_numpy(out["logits"]).argmax(1)
    unexplained = (pred_t != pred_o) & ~explained
    top2 = logits.topk(2, dim=1).values
    tie = (top2[:, 0] - top2[:, 1]) <= 1e-5 * top2.abs().max(1).values.clamp_min(1)
    assert not (unexplained & ~tie).any(), f"predictions differ without a code difference (codes: {counts})"
    # measured with these seeds: one layer-1 code difference (near a threshold), no prediction difference
    assert int((pred_t != pred_o).sum()) <= int(explained.sum())
    print(f"{quant.describe()}: code differences per layer {counts}, prediction differences "
          f"{int((pred_t != pred_o).sum())}/300")


def test_build_refuses_the_float_network_and_mixed_specs():
    with pytest.raises(cg.ConfigError, match="QuantReLU"):
        build_lenet_onnx(LeNet5(10, bits=None, channels=(2, 2), hidden=3))
    model = LeNet5(10, channels=(2, 2), hidden=3)
    model.classifier[2] = cg.QuantReLU(3)
    with pytest.raises(cg.ConfigError, match="one spec"):
        build_lenet_onnx(model)


def test_to_onnx_writes_a_lenet5(tmp_path):
    model = LeNet5(10, channels=(3, 4), hidden=6, generator=torch.Generator().manual_seed(2)).eval()
    path = cg.export.to_onnx(model, tmp_path / "l.onnx")
    x = torch.randn(20, 784, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(x)
    got = run_onnx(onnx_session(path), x.numpy())["logits"]
    assert got.shape == (20, 10) and np.array_equal(got.argmax(1), want.argmax(1).numpy())
