"""QuantLinear / QuantConv2d: forward with the effective weight of each method against
NumPy (Q from the oracle), the straight-through gradient (masked at ±clip for the STE),
BinaryRelax's relaxed and hard phases, buffers in the state_dict, from_float copies."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import coarsegrad as cg
from coarsegrad.errors import ConfigError
from coarsegrad.quant.qlayers import QuantConv2d, QuantLinear
from coarsegrad.quant.weight_spec import WeightQuant
from oracles import numpy_weight_codes


def _q(w, spec):
    codes, scales = numpy_weight_codes(w, spec.kind, spec.bits, spec.granularity)
    return scales * codes


def _linear(gen, spec, dtype=torch.float64):
    float_layer = nn.Linear(6, 4, dtype=dtype)
    with torch.no_grad():
        float_layer.weight.copy_(torch.randn(4, 6, generator=gen, dtype=dtype))
        float_layer.bias.copy_(torch.randn(4, generator=gen, dtype=dtype))
    return float_layer, QuantLinear.from_float(float_layer, spec)


@pytest.mark.parametrize("spec", [WeightQuant("binary", method="bcgd"), WeightQuant("ternary", granularity="channel", clip=None),
                                  WeightQuant("uniform", 3, method="ste", clip=None)])
def test_linear_forward_and_straight_through_gradient(spec, gen):
    float_layer, layer = _linear(gen, spec)
    assert torch.equal(layer.weight, float_layer.weight) and torch.equal(layer.bias, float_layer.bias)
    assert layer.weight is not float_layer.weight
    x = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    upstream = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    out = layer(x)
    w = layer.weight.detach().numpy()
    q = _q(w, spec)
    np.testing.assert_allclose(out.detach().numpy(), x.numpy() @ q.T + layer.bias.detach().numpy(), rtol=1e-12)
    out.backward(upstream)
    np.testing.assert_allclose(layer.weight.grad.numpy(), upstream.numpy().T @ x.numpy(), rtol=1e-12)


def test_ste_gradient_is_masked_outside_clip(gen):
    spec = WeightQuant("binary", method="ste", clip=1.0)
    layer = QuantLinear(3, 2, bias=False, weight_quant=spec, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0, 1.5], [-1.0000001, 0.0, 0.3]], dtype=torch.float64))
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    layer(x).sum().backward()
    mask = (np.abs(layer.weight.detach().numpy()) <= 1.0)  # ±clip itself keeps its gradient
    np.testing.assert_array_equal(layer.weight.grad.numpy(), mask * np.array([[1.0, 2.0, 3.0]] * 2))
    assert mask.tolist() == [[True, True, False], [False, True, True]]


def test_conv_matches_conv_of_projected_weight(gen):
    spec = WeightQuant("uniform", 4, "channel", method="bcgd")
    float_conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=torch.float64)
    conv = QuantConv2d.from_float(float_conv, spec)
    assert (conv.stride, conv.padding, conv.groups, conv.kernel_size) == ((2, 2), (1, 1), 2, (3, 3))
    x = torch.randn(2, 4, 7, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    q = torch.tensor(_q(conv.weight.detach().numpy(), spec))
    out = conv(x)
    want = F.conv2d(x, q, conv.bias, stride=2, padding=1, groups=2)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    leaf = q.clone().requires_grad_(True)
    F.conv2d(x.detach(), leaf, conv.bias.detach(), stride=2, padding=1, groups=2).backward(upstream)
    out.backward(upstream)
    torch.testing.assert_close(conv.weight.grad, leaf.grad, rtol=1e-12, atol=1e-12)  # g(Q(w)) on w


def test_binaryrelax_relaxed_hard_and_eval(gen):
    spec = WeightQuant("ternary", method="binaryrelax", lam0=2.0)
    _, layer = _linear(gen, spec)
    u = layer.weight.detach().numpy()
    q = _q(u, spec)
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    bias = layer.bias.detach().numpy()
    out = layer(x)
    np.testing.assert_allclose(out.detach().numpy(), x.numpy() @ ((2.0 * q + u) / 3.0).T + bias, rtol=1e-12)
    upstream = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    out.backward(upstream)
    np.testing.assert_allclose(layer.weight.grad.numpy(), upstream.numpy().T @ x.numpy(), rtol=1e-12)
    layer.eval()  # evaluation sees the deployed Q(u)
    assert torch.equal(layer(x), F.linear(x, torch.tensor(q), layer.bias))
    layer.train()
    layer.relax_hard.fill_(True)
    assert torch.equal(layer(x), F.linear(x, torch.tensor(q), layer.bias))  # hard phase: Q(u) exactly
    assert bool(QuantLinear(2, 2, weight_quant=WeightQuant(method="binaryrelax", hard_after=0)).relax_hard)


def test_buffers_travel_in_the_state_dict(gen):
    spec = WeightQuant("binary", method="binaryrelax", lam0=0.5)
    _, layer = _linear(gen, spec)
    assert set(layer.state_dict()) == {"weight", "bias", "relax_lambda", "relax_hard"}
    layer.relax_lambda.mul_(3.0)
    layer.relax_hard.fill_(True)
    fresh = QuantLinear(6, 4, weight_quant=spec, dtype=torch.float64)
    fresh.load_state_dict(layer.state_dict())
    assert float(fresh.relax_lambda) == 1.5 and bool(fresh.relax_hard)
    assert "kind=binary" in repr(fresh)


def test_bad_specs_raise_config_error():
    with pytest.raises(ConfigError) as info:
        QuantLinear(2, 2, weight_quant=cg.ActQuant(2))
    assert info.value.field == "weight_quant"
    with pytest.raises(ConfigError) as info:
        QuantConv2d.from_float(nn.Conv2d(1, 1, 3), WeightQuant("ternary", step="lsq"))
    assert info.value.field == "step"


def test_quantized_weight_layers_never_take_the_fast_step():
    mlp = cg.MLP(6, 5, 3, generator=torch.Generator().manual_seed(0))
    assert mlp.two_layer_form() is not None
    mlp.fc1 = QuantLinear.from_float(mlp.fc1, WeightQuant())
    assert mlp.two_layer_form() is None
