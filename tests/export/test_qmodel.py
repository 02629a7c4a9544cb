"""Integer-only form of fully quantized MLP / LeNet-5: engine against a float64 oracle and an
int64 oracle, ONNX bit for bit against the engine, agreement with PyTorch on MNIST, sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import coarsegrad as cg
from coarsegrad.data.datasets import find_dataset
from coarsegrad.errors import ConfigError, DataError
from coarsegrad.export.qmodel import QLayer, QuantizedModel, deployed_size, images_per_second, to_quantized
from coarsegrad.export.qmodel_io import load_quantized, packed_tensors, save_quantized
from coarsegrad.models.networks import MLP, LeNet5
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.qlayers import QUANT_LAYERS, quantize_weights
from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.weight_spec import WeightQuant

MEAN, STD = 0.1307, 0.3081


def pixels(n: int, gen: torch.Generator, split: str = "random") -> torch.Tensor:
    """uint8 [n, 784]: MNIST images when asked and present, else random pixels."""
    if split != "random":
        if find_dataset("mnist") is None:
            pytest.skip("MNIST not found (set COARSEGRAD_DATA)")
        return cg.load_dataset("mnist", split)[0][:n].reshape(n, -1)
    return torch.randint(0, 256, (n, 784), generator=gen, dtype=torch.uint8)


def normalise(p: torch.Tensor) -> torch.Tensor:
    """What data/splits.py feeds the model: (p/255 − μ)/σ in float32."""
    return p.float().div_(255.0).sub_(MEAN).div_(STD)


def quantized(model: nn.Module, spec: WeightQuant, calib: torch.Tensor) -> nn.Module:
    """``model`` with quantized weights and batch-norm statistics from ``calib``, in eval mode."""
    model = quantize_weights(model, spec)
    model.train()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, QUANT_LAYERS) and spec.step == "lsq":
                layer.weight_step.mul_(0.8)  # a learned step away from its initial value
        for _ in range(2):
            model(calib)
    return model.eval()


MODELS = {
    "lenet_ternary": lambda g: (LeNet5(channels=(6, 8), hidden=32, generator=g), WeightQuant("ternary")),
    "lenet_uniform4_channel": lambda g: (LeNet5(channels=(6, 8), hidden=32, generator=g, quant=ActQuant(3, rounding="ceil")),
                                         WeightQuant("uniform", 4, granularity="channel")),
    "mlp_binary_bn": lambda g: (MLP(784, 48, 10, batchnorm=True, generator=g), WeightQuant("binary")),
    "mlp_uniform4_lsq_channel": lambda g: (MLP(784, 40, 10, generator=g),
                                           WeightQuant("uniform", 4, granularity="channel", step="lsq")),
    "mlp_uniform8_plain": lambda g: (MLP(784, 40, 10, generator=g, quant=ActQuant(4, rounding="floor")),
                                     WeightQuant("uniform", 8, granularity="channel")),
}


def float64_oracle(model: nn.Module, p: torch.Tensor) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and pre-pool codes of ``model`` recomputed in float64 from Q(w) and the exact
    inputs (p/255 − μ)/σ, the codes by comparison with the spec's float32 thresholds."""
    a = ((p.double() / 255.0 - MEAN) / STD)
    a = a.reshape(-1, 1, 28, 28) if isinstance(model, LeNet5) else a
    mods = [m for m in model.modules() if isinstance(m, (*QUANT_LAYERS, nn.BatchNorm1d, nn.BatchNorm2d, QuantReLU,
                                                         nn.MaxPool2d))]
    codes = []
    for m in mods:
        if isinstance(m, QUANT_LAYERS):
            w, b = m.quantized_weight().double(), m.bias.detach().double()
            if a.dim() == 4 and w.dim() == 2:
                a = a.flatten(1)
            a = F.conv2d(a, w, b) if w.dim() == 4 else a @ w.T + b
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            shape = (1, -1) + (1,) * (a.dim() - 2)
            a = (a - m.running_mean.double().reshape(shape)) / torch.sqrt(m.running_var.double().reshape(shape) + m.eps)
        elif isinstance(m, QuantReLU):
            t = torch.tensor(m.quant.thresholds(torch.float32), dtype=torch.float64)
            c = (a[..., None] > t).sum(-1)
            codes.append(c.to(torch.uint8).numpy())
            a = c.double() * float(np.float32(m.quant.alpha))
        else:
            a = F.max_pool2d(a, 2)
    return a.numpy(), codes


@pytest.mark.parametrize("name", sorted(MODELS))
def test_engine_equals_the_float64_oracle_and_the_int64_accumulation(name, gen):
    model, spec = MODELS[name](gen)
    model = quantized(model, spec, normalise(pixels(256, gen)))
    p = pixels(64, gen)
    qm = to_quantized(model, (MEAN, STD))
    logits, codes = qm.forward(normalise(p).numpy())
    logits_u8, codes_u8 = qm.forward(p.numpy())  # uint8 pixels directly
    logits64, codes64 = qm.forward(p.numpy(), exact="int64")
    want_logits, want_codes = float64_oracle(model, p)
    assert np.array_equal(logits, logits_u8) and np.array_equal(logits, logits64)
    assert len(codes) == len(want_codes)
    for c, c8, c64, want in zip(codes, codes_u8, codes64, want_codes, strict=True):
        assert np.array_equal(c, want) and np.array_equal(c, c8) and np.array_equal(c, c64)
    assert np.allclose(logits, want_logits, rtol=1e-5, atol=1e-5)


def test_pixels_are_recovered_exactly_from_every_normalised_value():
    for mean, std in ((MEAN, STD), (0.2860, 0.3530), (0.5, 0.25)):
        qm = QuantizedModel((QLayer(np.ones((2, 784), np.int8), "binary", 1, scale=np.ones(2, np.float32),
                                    bias=np.zeros(2, np.float32)),), (784,), mean, std)
        p = torch.arange(256, dtype=torch.uint8).repeat(4)[:784].reshape(1, 784)
        x = p.float().div_(255.0).sub_(mean).div_(std)
        assert np.array_equal(qm.pixels(x.numpy()), p.numpy().astype(np.float32))


def test_negative_and_zero_folded_scales(gen):
    """An affine batch-norm with γ < 0 (codes negated) and a zero weight row (constant code)."""
    model = MLP(784, 12, 3, batchnorm=True, generator=gen)
    model.norm = nn.BatchNorm1d(12, affine=True)
    with torch.no_grad():
        model.norm.weight.copy_(torch.linspace(-2, 2, 12))  # includes negative γ
        model.norm.bias.copy_(torch.linspace(-0.5, 1.5, 12))
        model.fc1.weight[3].zero_()
    model = quantized(model, WeightQuant("ternary", granularity="channel"), normalise(pixels(128, gen)))
    p = pixels(64, gen)
    qm = to_quantized(model, (MEAN, STD))

    def oracle(p):
        x = (p.double() / 255.0 - MEAN) / STD
        z = x @ model.fc1.quantized_weight().double().T + model.fc1.bias.double()
        bn = model.norm
        z = (z - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps) * bn.weight.double() + bn.bias.double()
        t = torch.tensor(model.act.quant.thresholds(torch.float32), dtype=torch.float64)
        return (z[..., None] > t).sum(-1).numpy()

    assert np.array_equal(qm.forward(p.numpy())[1][0], oracle(p))
    assert len(set(qm.forward(p.numpy())[1][0][:, 3].tolist())) == 1  # a zero row gives one constant code


def test_float_weights_learned_steps_and_other_models_are_refused(gen):
    with pytest.raises(ConfigError, match="float weights"):
        to_quantized(MLP(784, 8, 3, generator=gen), (MEAN, STD))
    learned = quantize_weights(MLP(784, 8, 3, generator=gen, quant=ActQuant(2, learn="lsq")), WeightQuant())
    with pytest.raises(ConfigError, match="freeze_learned"):
        to_quantized(learned, (MEAN, STD))
    with pytest.raises(ConfigError, match="MLP and LeNet5"):
        to_quantized(quantize_weights(nn.Sequential(nn.Linear(4, 3)), WeightQuant()), (MEAN, STD))


def test_inconsistent_layers_are_data_errors():
    good = QLayer(np.ones((3, 4), np.int8), "binary", 1, scale=np.ones(3, np.float32), bias=np.zeros(3, np.float32))
    QuantizedModel((good,), (4,), 0.0, 1.0)
    with pytest.raises(DataError, match="do not fit"):
        QuantizedModel((good,), (5,), 0.0, 1.0)
    hidden = QLayer(np.ones((4, 4), np.int8), "binary", 1, thresholds=np.zeros((4, 2), np.int64))
    with pytest.raises(DataError, match="2\\^b"):
        QuantizedModel((hidden, good), (4,), 0.0, 1.0)
    with pytest.raises(DataError, match="std"):
        QuantizedModel((good,), (4,), 0.0, 0.0)


def test_file_round_trip_and_packed_sizes(gen, tmp_path):
    model, spec = MODELS["lenet_uniform4_channel"](gen)
    model = quantized(model, spec, normalise(pixels(128, gen)))
    qm = to_quantized(model, (MEAN, STD))
    path = save_quantized(tmp_path / "m.qint.safetensors", qm, {"architecture": "lenet5"})
    back, meta = load_quantized(path)
    x = normalise(pixels(32, gen)).numpy()
    assert np.array_equal(back.logits(x), qm.logits(x)) and meta["header"] == {"architecture": "lenet5"}
    for a, b in zip(back.layers, qm.layers, strict=True):
        assert np.array_equal(a.q, b.q)
    tensors = packed_tensors(qm)
    for i, layer in enumerate(qm.layers):  # 4-bit codes: two per byte
        assert tensors[f"layer{i}.codes"].nbytes == math.ceil(layer.q.size / 2)
    packed, full = deployed_size(model)
    assert packed == sum(t.nbytes for t in tensors.values())
    floats = sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, QUANT_LAYERS))
    floats += sum(2 * m.num_features for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)))
    assert full == 4 * floats and packed < full / 4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_equals_the_engine_bit_for_bit(name, gen):
    pytest.importorskip("onnxruntime")
    from coarsegrad.export.onnx_graph import onnx_session, run_onnx
    from coarsegrad.export.onnx_qmodel import build_qmodel_onnx

    model, spec = MODELS[name](gen)
    model = quantized(model, spec, normalise(pixels(256, gen)))
    qm = to_quantized(model, (MEAN, STD))
    x = normalise(pixels(64, gen)).numpy()
    out = run_onnx(onnx_session(build_qmodel_onnx(qm, with_codes=True)), x)
    logits, codes = qm.forward(x)
    assert out["logits"].dtype == np.float32 and np.array_equal(out["logits"], logits)
    for i, c in enumerate(codes):
        assert np.array_equal(out[f"codes{i + 1}"], c)


def test_onnx_integer_operators_above_2_to_the_24(gen):
    """Layers whose accumulator bound reaches 2^24 run ConvInteger / MatMulInteger, still bit for bit."""
    pytest.importorskip("onnxruntime")
    from coarsegrad.export.onnx_graph import onnx_session, run_onnx
    from coarsegrad.export.onnx_qmodel import build_qmodel_onnx, integer_ops

    rng = np.random.default_rng(0)
    q1 = (rng.integers(120, 128, (16, 24, 5, 5)) * rng.choice([-1, 1], (16, 24, 5, 5))).astype(np.int8)
    layers = (QLayer(q1, "uniform", 8, thresholds=np.sort(rng.integers(-200_000, 200_000, (16, 255)), 1), pool=2),
              QLayer(rng.integers(120, 128, (5, 16 * 6 * 6)).astype(np.int8), "uniform", 8,
                     scale=np.full(5, 1e-3, np.float32), bias=rng.standard_normal(5).astype(np.float32)))
    qm = QuantizedModel(layers, (24, 16, 16), 0.5, 0.25)
    assert integer_ops(qm, 0) and integer_ops(qm, 1)
    p = rng.integers(0, 256, (40, 24 * 16 * 16)).astype(np.uint8)
    x = ((p.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.25)).astype(np.float32)
    out = run_onnx(onnx_session(build_qmodel_onnx(qm, with_codes=True)), x)
    logits, codes = qm.forward(x)
    logits64, codes64 = qm.forward(p, exact="int64")
    assert np.array_equal(out["logits"], logits) and np.array_equal(logits, logits64)
    assert np.array_equal(out["codes1"], codes[0]) and np.array_equal(codes[0], codes64[0])
    assert 0 < codes[0].mean() < 255  # thresholds in range: the comparison is exercised


@pytest.mark.parametrize("name", ["lenet_ternary", "mlp_binary_bn"])
def test_agreement_with_pytorch_on_mnist(name, gen):
    pytest.importorskip("onnxruntime")
    from coarsegrad.export.onnx_graph import onnx_session
    from coarsegrad.export.onnx_qmodel import build_qmodel_onnx
    from coarsegrad.export.qagreement import qmodel_agreement

    model, spec = MODELS[name](gen)
    model = quantized(model, spec, normalise(pixels(512, gen, "train")))
    qm = to_quantized(model, (MEAN, STD))
    x = normalise(pixels(300, gen, "test"))
    report = qmodel_agreement(model, qm, x.numpy(), session=onnx_session(build_qmodel_onnx(qm, with_codes=True)))
    assert report["onnx_vs_engine"] == {"samples_with_logits_not_bitwise_equal": 0, "pred_disagree": 0, "code_disagree": 0}
    assert all(layer["unexplained"] == 0 for layer in report["layers"])
    assert report["torch_vs_engine_pred_unexplained"] == 0
    one = qm.forward(x[:1].numpy())[1]
    assert [layer["codes_total"] for layer in report["layers"]] == [c.size * 300 for c in one]


def test_agreement_explains_a_code_moved_across_a_threshold(gen):
    """A PyTorch pre-activation nudged onto the other side of a threshold is near it (explained);
    moved far away it is unexplained."""
    from coarsegrad.export.qagreement import qmodel_agreement

    model = quantized(MLP(784, 16, 3, generator=gen), WeightQuant("ternary"), normalise(pixels(64, gen)))
    qm = to_quantized(model, (MEAN, STD))
    x = normalise(pixels(8, gen)).numpy()
    t0 = model.act.quant.thresholds(torch.float32)[0]

    def nudge(delta):
        hook = model.act.register_forward_pre_hook(
            lambda _m, inp: (torch.cat([torch.full_like(inp[0][:, :1], t0 + delta), inp[0][:, 1:]], 1),))
        try:
            return qmodel_agreement(model, qm, x)
        finally:
            hook.remove()

    engine_codes = qm.forward(x)[1][0][:, 0]
    tiny = nudge(0.0 if (engine_codes != 0).any() else float(np.spacing(np.float32(t0))))
    far = nudge(10.0)
    assert tiny["layers"][0]["unexplained"] == 0 and tiny["layers"][0]["near_threshold"] >= 1
    assert far["layers"][0]["unexplained"] >= 1


def test_images_per_second_times_the_engine(gen):
    model = quantized(MLP(784, 16, 3, generator=gen), WeightQuant("ternary"), normalise(pixels(64, gen)))
    qm = to_quantized(model, (MEAN, STD))
    rate = images_per_second(qm.predict, normalise(pixels(200, gen)).numpy(), repeats=2)
    assert rate > 0 and math.isfinite(rate)
    with pytest.raises(ConfigError, match="repeats"):
        images_per_second(qm.predict, np.zeros((1, 784), np.float32), repeats=0)
