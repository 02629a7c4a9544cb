"""LSQ learned step for quantized weights (``WeightQuant(kind="uniform", step="lsq")``): the
spec's rules, s₀, the forward against s·clip(round_half_even(w/s), −M, M) at and around the
thresholds, ∂/∂w and ∂/∂s against a NumPy re-implementation of LSQ (per layer and per
channel), the exported codes and scales, the step in the state_dict, a short training run."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import coarsegrad as cg
from coarsegrad.errors import ConfigError, DataError
from coarsegrad.quant.qlayers import QuantConv2d, QuantLinear
from coarsegrad.quant.weight_spec import WeightQuant
from coarsegrad.quant.weights import weight_codes

LSQ4 = WeightQuant("uniform", 4, step="lsq")  # M = 7


def numpy_lsq_weight(w, s, m, upstream_w, axis):
    """Q = s·clip(round(v), −M, M), v = w/s, and LSQ's gradients given ∂L/∂Q = ``upstream_w``:
    ∂L/∂w = ∂L/∂Q·1{−M ≤ v ≤ M}; ∂L/∂s = g·Σ ∂L/∂Q·(round(v) − v inside, −M at or below −M,
    M at or above M), g = 1/√(N·M), summed over ``axis`` (all: per layer; all but 0: per channel)."""
    w, s = np.asarray(w, np.float64), np.asarray(s, np.float64)
    v = w / s
    q = s * np.clip(np.round(v), -m, m)
    n = w.size if axis is None else int(np.prod([w.shape[a] for a in axis]))
    g = 1.0 / math.sqrt(n * m)
    dw = upstream_w * ((v >= -m) & (v <= m))
    inner = np.where(v <= -m, -m, np.where(v >= m, m, np.round(v) - v))
    ds = g * (upstream_w * inner).sum(axis=axis, keepdims=axis is not None)
    return q, dw, ds


def test_spec_rules_name_the_field():
    spec = WeightQuant("uniform", 2, "channel", step="lsq")
    assert spec.clip is None and WeightQuant.from_dict(spec.to_dict()) == spec
    assert WeightQuant("uniform", 2, step="lsq", clip=None) == WeightQuant("uniform", 2, step="lsq")
    assert "LSQ" in spec.describe() and "step=lsq" in spec.describe()
    for kwargs, field in [({"kind": "binary"}, "step"), ({"kind": "ternary"}, "step"),
                          ({"kind": "uniform", "bits": 4, "method": "bcgd"}, "step"),
                          ({"kind": "uniform", "bits": 4, "method": "binaryrelax"}, "step"),
                          ({"kind": "uniform", "bits": 4, "clip": 0.5}, "clip")]:
        with pytest.raises(ConfigError) as info:
            WeightQuant(**kwargs, step="lsq")
        assert info.value.field == field, kwargs
    assert "uniform" in str(pytest.raises(ConfigError, WeightQuant, "ternary", step="lsq").value)


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_initial_step_is_lsq_paper_rule_of_the_copied_weights(granularity, gen):
    spec = WeightQuant("uniform", 3, granularity, step="lsq")  # M = 3
    float_conv = nn.Conv2d(2, 4, 3)
    with torch.no_grad():
        float_conv.weight.mul_(torch.arange(1, 5).view(4, 1, 1, 1))  # channels of different sizes
    conv = QuantConv2d.from_float(float_conv, spec)
    w = float_conv.weight.detach().numpy().astype(np.float64)
    mean = np.abs(w).mean() if granularity == "layer" else np.abs(w).mean(axis=(1, 2, 3), keepdims=True)
    want = (2 * mean / math.sqrt(3)).astype(np.float32)
    assert isinstance(conv.weight_step, nn.Parameter) and conv.weight_step.dtype == torch.float32
    assert tuple(conv.weight_step.shape) == (() if granularity == "layer" else (4, 1, 1, 1))
    np.testing.assert_array_equal(conv.weight_step.detach().numpy(), want)
    assert "weight_step" in dict(conv.named_parameters())
    linear = QuantLinear(6, 5, weight_quant=spec)  # made directly: s₀ of its own initial weights
    assert tuple(linear.weight_step.shape) == (() if granularity == "layer" else (5, 1))
    assert QuantLinear(6, 5, weight_quant=WeightQuant("uniform", 3)).weight_step is None
    with pytest.raises(DataError) as info:
        QuantLinear.from_float(nn.Linear(3, 2).requires_grad_(False).apply(lambda m: m.weight.zero_()), spec)
    assert info.value.field == "weight"


def test_forward_at_thresholds_matches_oracle_and_exported_codes():
    s, m = 0.25, 7
    ratios = np.array([[0.0, 1.0, -3.0, 0.5, 1.5, 2.5, -0.5, -2.5],  # k and k + ½ (ties to even)
                       [7.0, -7.0, 6.5, -6.5, 7.4, 7.5, 9.0, -40.0],  # ±M, the last tie, beyond
                       [0.49, 0.51, 3.2, -3.7, 6.9, -6.51, 100.0, -7.49]])
    layer = QuantLinear(8, 3, bias=False, weight_quant=LSQ4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(ratios * s))
        layer.weight_step.fill_(s)
    want = s * np.clip(np.round(ratios), -m, m)
    assert want[0].tolist() == [0.0, 0.25, -0.75, 0.0, 0.5, 0.5, 0.0, -0.5]  # half to even, by hand
    eye = torch.eye(8)
    for mode in (layer.train, layer.eval):
        mode()
        np.testing.assert_array_equal(layer(eye).detach().numpy().T, want)
    codes, scales = layer.codes_and_scales()
    assert codes.dtype == torch.int8 and scales.shape == () and float(scales) == s
    np.testing.assert_array_equal(codes.numpy(), np.clip(np.round(ratios), -m, m))
    assert torch.equal(layer.quantized_weight(), scales * codes.float())


def test_float32_near_ties_train_forward_equals_exported_q(gen):
    """w/s is taken in w's dtype in the forward as in weight_codes, so a float32 weight one
    ulp off a tie (k + ½)·s is rounded the same way in training and in the exported codes."""
    spec = WeightQuant("uniform", 4, "channel", step="lsq")
    step = torch.rand(5, 1, generator=gen) * 0.3 + 0.05
    k = torch.randint(-7, 7, (5, 40), generator=gen).float() + 0.5
    base = k * step
    w = torch.cat([torch.nextafter(base, base + 1), torch.nextafter(base, base - 1), base], dim=1)
    layer = QuantLinear(120, 5, bias=False, weight_quant=spec)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.weight_step.copy_(step)
    w_hat = layer(torch.eye(120)).T
    codes, scales = layer.codes_and_scales()
    assert torch.equal(w_hat, scales * codes.float()) and torch.equal(layer.quantized_weight(), w_hat)
    oracle = np.clip(np.round(w.numpy() / step.numpy()), -7, 7)  # float32 / float32 in NumPy
    assert oracle.dtype == np.float32
    np.testing.assert_array_equal(codes.numpy(), oracle)


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_linear_gradients_match_numpy_lsq(granularity, gen):
    spec = WeightQuant("uniform", 3, granularity, step="lsq")  # M = 3
    layer = QuantLinear(6, 4, weight_quant=spec, dtype=torch.float64)
    steps = torch.tensor([0.25, 0.5, 0.125, 0.25], dtype=torch.float64).view(4, 1)  # powers of 2: exact w/s
    with torch.no_grad():
        layer.weight.copy_(torch.randn(4, 6, generator=gen, dtype=torch.float64))
        layer.weight_step.copy_(steps if granularity == "channel" else steps[0, 0])
        layer.weight[0, :4] = torch.tensor([3.0, -3.0, 1.5, -0.5]) * 0.25  # at ±M and at ties
    s = layer.weight_step.detach().numpy()
    x = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    upstream = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    out = layer(x)
    out.backward(upstream)
    w = layer.weight.detach().numpy()
    grad_q = upstream.numpy().T @ x.numpy()
    q, dw, ds = numpy_lsq_weight(w, s, 3, grad_q, None if granularity == "layer" else (1,))
    v = w / s
    assert v[0, :4].tolist() == [3.0, -3.0, 1.5, -0.5] and (np.abs(v) > 3).any() and (np.abs(v) < 3).any()
    np.testing.assert_allclose(out.detach().numpy(), x.numpy() @ q.T + layer.bias.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.weight.grad.numpy(), dw, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.weight_step.grad.numpy(), ds, rtol=1e-10, atol=1e-14)
    assert layer.weight_step.grad.shape == layer.weight_step.shape


def test_conv_per_channel_gradients_match_numpy_lsq(gen):
    spec = WeightQuant("uniform", 2, "channel", step="lsq")  # M = 1: ternary levels −s, 0, s
    float_conv = nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64)
    conv = QuantConv2d.from_float(float_conv, spec)
    x = torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64)
    out = conv(x)
    upstream = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    out.backward(upstream)
    w, s = conv.weight.detach().numpy(), conv.weight_step.detach().numpy()
    q = s * np.clip(np.round(w / s), -1, 1)
    leaf = torch.tensor(q, requires_grad=True)  # ∂L/∂Q from torch's own conv at the oracle's Q
    torch.testing.assert_close(out, F.conv2d(x, leaf, conv.bias, padding=1), rtol=1e-12, atol=1e-12)
    F.conv2d(x, leaf, conv.bias.detach(), padding=1).backward(upstream)
    _, dw, ds = numpy_lsq_weight(w, s, 1, leaf.grad.numpy(), (1, 2, 3))
    np.testing.assert_allclose(conv.weight.grad.numpy(), dw, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(conv.weight_step.grad.numpy(), ds, rtol=1e-10, atol=1e-14)


def test_weight_codes_step_argument_is_checked():
    w = torch.tensor([[0.3, -0.6], [0.1, 0.2]])
    with pytest.raises(ConfigError, match="step"):
        weight_codes(w, LSQ4)
    with pytest.raises(ConfigError, match="step"):
        weight_codes(w, WeightQuant("uniform", 4), torch.tensor(0.1))
    for bad in (torch.tensor(0.0), torch.tensor(float("inf")), torch.tensor(float("nan")), torch.ones(2, 1)):
        with pytest.raises(DataError) as info:
            weight_codes(w, LSQ4, bad)
        assert info.value.field == "step"


def test_a_negative_step_acts_as_its_magnitude_in_training_and_export(gen):
    """LSQ keeps no sign on s: the forward s·clip(⌊w/s⌉) is even in s, and the exported
    (codes, scales) reproduce it exactly with |s|."""
    layer = QuantLinear.from_float(nn.Linear(6, 3), WeightQuant("uniform", 3, granularity="channel", step="lsq"))
    with torch.no_grad():
        layer.weight_step[1] *= -1
    codes, scales = layer.codes_and_scales()
    assert (scales > 0).all()
    x = torch.randn(5, 6, generator=gen)
    want = F.linear(x, scales * codes, layer.bias)
    assert torch.equal(layer(x), want)  # the training forward with s < 0 is the export with |s|
    w, step = layer.weight.detach().numpy(), layer.weight_step.detach().abs().numpy()
    q, _, _ = numpy_lsq_weight(w, step, 3, np.zeros_like(w), (1,))
    np.testing.assert_allclose((scales * codes).numpy(), q, rtol=1e-6, atol=0)


def test_step_travels_in_the_state_dict(gen):
    spec = WeightQuant("uniform", 4, "channel", step="lsq")
    layer = QuantConv2d(1, 3, 3, weight_quant=spec)
    with torch.no_grad():
        layer.weight_step.copy_(torch.tensor([0.125, 0.25, 0.5]).view(3, 1, 1, 1))
    assert set(layer.state_dict()) == {"weight", "bias", "relax_lambda", "relax_hard", "weight_step"}
    fresh = QuantConv2d(1, 3, 3, weight_quant=spec)
    fresh.load_state_dict(layer.state_dict())
    assert fresh.weight_step.flatten().tolist() == [0.125, 0.25, 0.5]
    x = torch.randn(2, 1, 6, 6, generator=gen)
    assert torch.equal(fresh(x), layer(x))


def test_training_lowers_the_loss_and_moves_the_step(gen):
    X, y = torch.randn(64, 10, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    torch.manual_seed(0)
    model = cg.quantize_model(nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3)), act=None,
                              weight=WeightQuant("uniform", 3, "channel", step="lsq"))
    assert isinstance(model[0], QuantLinear) and model[0].weight_step.shape == (16, 1)
    start = [m.weight_step.detach().clone() for m in (model[0], model[2])]
    before = F.cross_entropy(model(X), y).item()
    cg.train(model, X, y, cg.TrainConfig(lr=0.01, steps=40, optimizer="adam", stop_at_perfect=False, fast=False))
    assert F.cross_entropy(model(X), y).item() < 0.8 * before
    for s0, m in zip(start, (model[0], model[2]), strict=True):
        assert not torch.equal(s0, m.weight_step.detach()) and bool((m.weight_step > 0).all())
