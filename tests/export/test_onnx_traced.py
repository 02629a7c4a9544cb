"""ONNX export of any traced model (a user class with its own forward, made by ``quantize_model``).

Oracle: the PyTorch model itself, counted per quantized layer by
:func:`coarsegrad.export.layer_agreement.layer_agreement`: a code may differ only where
PyTorch's pre-activation lies within the float32 rounding bound of a threshold (or
downstream of such a difference), a prediction only on a sample with a code difference.
A deliberately wrong export must show up as unexplained differences.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import coarsegrad as cg
from coarsegrad.data.datasets import find_dataset
from coarsegrad.errors import ConfigError
from coarsegrad.export.layer_agreement import layer_agreement
from coarsegrad.export.onnx_graph import onnx_session, run_onnx, to_onnx
from coarsegrad.export.onnx_lenet import build_lenet_onnx
from coarsegrad.export.onnx_traced import build_traced_onnx
from coarsegrad.models.networks import MLP, LeNet5

pytest.importorskip("onnxruntime")
ROUNDINGS = [cg.ActQuant(2), cg.ActQuant(2, rounding="nearest"), cg.ActQuant(3, alpha=0.4, rounding="floor")]


class UserNet(nn.Module):
    """conv → BN → σ, a residual block (conv → BN → σ, + skip), functional relu → max-pool →
    avg-pool → cat → view(x.size(0), -1) → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.conv2, self.bn2, self.act2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.bn1(self.conv1(x.reshape(-1, 1, 28, 28))))
        r = self.act2(self.bn2(self.conv2(h))) + h
        p = self.pool(F.max_pool2d(F.relu(r), 2))
        c = torch.cat([p, p * 0.5], dim=1)
        return self.fc(c.view(c.size(0), -1))


@functools.cache
def _mnist(split: str) -> torch.Tensor | None:
    if find_dataset("mnist") is None:
        return None
    x, _ = cg.load_dataset("mnist", split)
    return torch.as_tensor(np.asarray(x[:600]), dtype=torch.float32).reshape(600, -1)


def images(n: int, split: str = "test") -> torch.Tensor:
    """The first ``n`` (≤ 600) MNIST images (normalised) when present, else seeded Gaussian images."""
    x = _mnist(split)
    if x is None:
        return torch.randn(n, 784, generator=torch.Generator().manual_seed(5))
    return (x[:n] / 255 - 0.1307) / 0.3081


def user_net(quant: cg.ActQuant, seed: int = 0) -> nn.Module:
    """Seeded weights; batch-norm statistics from 256 training images (non-trivial fold)."""
    torch.manual_seed(seed)
    model = cg.quantize_model(UserNet(), quant, functional=False)  # F.relu stays float: exported as Relu
    with torch.no_grad():
        model.train()(images(256, "train"))
    return model.eval()


@pytest.mark.parametrize("quant", ROUNDINGS, ids=lambda q: f"{q.bits}b-{q.rounding}")
def test_user_class_agrees_with_pytorch(quant):
    model = user_net(quant)
    assert isinstance(model.act1, cg.QuantReLU) and isinstance(model.act2, cg.QuantReLU)
    x = images(300)
    proto = build_traced_onnx(model, (784,), with_preact=True)
    kinds = {n.op_type for n in proto.graph.node}
    assert {"Conv", "Gemm", "MaxPool", "AveragePool", "Concat", "Add", "Relu", "Reshape"} <= kinds
    assert "BatchNormalization" not in kinds  # both batch-norms folded
    report = layer_agreement(model, onnx_session(proto), x, (784,))
    assert [s["module"] for s in report["sites"]] == ["act1", "act2"]
    for site in report["sites"]:
        assert site["layer"] == "Conv2d" and site["batchnorm_folded"]
        assert site["unexplained"] == 0, report["differing_codes"][:5]
    assert report["pred_disagree"] == report["pred_disagree_with_code_disagree"]
    # where no code differs, the logits agree to float32 rounding
    out = run_onnx(onnx_session(proto), x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    clean = np.ones(len(x), bool)
    clean[[d["sample"] for d in report["differing_codes"]]] = False
    assert clean.sum() >= 290 and np.allclose(out["logits"][clean], want[clean], atol=1e-4)
    # the quantized layers really quantize: α·c takes at most L + 1 values (and not one or two)
    with torch.no_grad():
        hidden = model.act1(torch.from_numpy(out["preact1"]))
    assert 3 <= len(torch.unique(hidden)) <= quant.levels + 1


def test_a_wrong_export_is_caught():
    """The counts can fail: an ONNX graph of a model with one shifted bias shows unexplained codes."""
    model = user_net(ROUNDINGS[0])
    wrong = user_net(ROUNDINGS[0])
    with torch.no_grad():
        wrong.conv1.bias += 0.05
    report = layer_agreement(model, onnx_session(build_traced_onnx(wrong, (784,), with_preact=True)), images(50), (784,))
    assert report["sites"][0]["unexplained"] > 0


def test_lenet5_agreement_on_a_few_hundred_images():
    """The comparison of benchmarks/export_agreement.py --model lenet5, on 300 images."""
    model = LeNet5(10, generator=torch.Generator().manual_seed(7), quant=cg.ActQuant(2)).train()
    with torch.no_grad():
        model(images(512, "train"))
    model.eval()
    report = layer_agreement(model, onnx_session(build_lenet_onnx(model, with_preact=True)), images(300), (784,))
    assert [s["layer"] for s in report["sites"]] == ["Conv2d", "Conv2d", "Linear"]
    assert all(s["unexplained"] == 0 for s in report["sites"]), report["differing_codes"][:5]
    assert report["pred_disagree"] == report["pred_disagree_with_code_disagree"]
    assert report["sites"][0]["codes_total"] == 300 * 20 * 24 * 24


def test_mlp_through_the_traced_path_matches_the_integer_export(tmp_path):
    model = MLP(784, 32, 10, batchnorm=True, generator=torch.Generator().manual_seed(1), quant=cg.ActQuant(2))
    with torch.no_grad():
        model.train()(images(256, "train"))
    model.eval()
    x = images(200).numpy()
    traced = run_onnx(onnx_session(build_traced_onnx(model, (784,))), x)["logits"]
    integer = run_onnx(onnx_session(to_onnx(model, tmp_path / "m.onnx")), x)["logits"]
    assert np.array_equal(traced.argmax(1), integer.argmax(1)) and np.allclose(traced, integer, atol=1e-4)


class FloatOps(nn.Module):
    """Float ops the table maps one by one: functional pools with non-default arguments,
    a batch-norm that cannot be folded (its producer has two users), a parameter used directly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=2, padding="valid")
        self.norm = nn.BatchNorm2d(3)
        self.scale = nn.Parameter(torch.tensor([1.5]))
        self.fc = nn.Linear(3 * 3 * 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = self.norm(y) + torch.relu(y) * self.scale
        y = F.max_pool2d(y, 3, 2, 1, ceil_mode=True)
        y = F.avg_pool2d(y, 2, padding=1, count_include_pad=False)
        return self.fc(torch.flatten(y, 1))


def test_float_ops_match_pytorch():
    torch.manual_seed(3)
    model = FloatOps()
    with torch.no_grad():
        model.norm.running_mean.uniform_(-1, 1)
        model.norm.running_var.uniform_(0.5, 2)
        model.norm.weight.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(64, 2, 15, 15)
    proto = build_traced_onnx(model, (2, 15, 15))
    assert "BatchNormalization" in {n.op_type for n in proto.graph.node}
    got = run_onnx(onnx_session(proto), x.numpy())["logits"]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == want.shape == (64, 4) and np.allclose(got, want, atol=1e-5)


class Bad(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.fc, self.sig = kind, nn.Linear(4, 4), nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        if self.kind == "function":
            return torch.tanh(y)
        if self.kind == "module":
            return self.sig(y)
        if self.kind == "method":
            return y.exp()
        if self.kind == "batch_cat":
            return torch.cat([y, y], 0)
        if self.kind == "merge_batch":
            return y.reshape(-1)
        return y if y.sum() > 0 else -y  # data-dependent control flow


@pytest.mark.parametrize("kind,named", [("function", "tanh at node tanh"), ("module", "Sigmoid at sig"),
                                        ("method", "method .exp()"), ("batch_cat", "concatenation along the batch"),
                                        ("merge_batch", "the batch must stay dimension 0"),
                                        ("control", "cannot trace Bad.forward")])
def test_unsupported_ops_fail_with_one_line(kind, named, tmp_path):
    with pytest.raises(ConfigError, match="cannot") as info:
        to_onnx(Bad(kind), tmp_path / "b.onnx", input_shape=(4,))
    message = str(info.value)
    assert named in message and "\n" not in message
    if kind != "control":
        assert "supported: Linear, Conv2d" in message


def test_to_onnx_of_a_user_class(tmp_path):
    model = user_net(ROUNDINGS[0])
    with pytest.raises(ConfigError, match="input_shape"):
        to_onnx(model, tmp_path / "u.onnx")
    path = to_onnx(model, tmp_path / "u.onnx", input_shape=(1, 28, 28), with_codes=True)
    names = [o.name for o in onnx_session(path).get_outputs()]
    assert names == ["logits", "preact1", "preact2"]
    assert not any(m.training for m in model.modules())  # export leaves each module's mode as it was
    model.train()
    layer_agreement(model, onnx_session(path), images(4), (1, 28, 28))
    assert all(m.training for m in model.modules())
