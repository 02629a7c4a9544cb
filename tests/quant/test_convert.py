"""quantize_model: which activations it replaces, the values it computes, what it leaves float."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import coarsegrad as cg
from coarsegrad.models.networks import LeNet5
from coarsegrad.quant.weight_spec import WeightQuant
from oracles import numpy_codes

SPEC = cg.ActQuant(2, rounding="nearest")


def sigma(x, spec, clip=None):
    """NumPy staircase of a float pre-activation (α = clip/L for a clipping activation)."""
    alpha = spec.alpha if clip is None else clip / spec.levels
    x = x.detach().numpy()
    return numpy_codes(x, spec.bits, alpha, spec.rounding) * np.float32(alpha)


def lin(i, o, gen):
    layer = nn.Linear(i, o)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(o, i, generator=gen))
        layer.bias.copy_(torch.randn(o, generator=gen))
    return layer


def quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when nothing is left float
        return cg.quantize_model(*args, **kwargs)


def test_sequential_modules_and_clip_levels(gen):
    l1, l2, l3, l4 = lin(5, 8, gen), lin(8, 8, gen), lin(8, 8, gen), lin(8, 3, gen)
    model = nn.Sequential(l1, nn.ReLU(), l2, nn.ReLU6(), l3, nn.Hardtanh(0.0, 2.0), l4, nn.GELU(), nn.Hardtanh())
    with pytest.warns(UserWarning, match=r"7 \(GELU\); 8 \(Hardtanh\)"):
        out, report = cg.quantize_model(model, act=SPEC, report=True)
    assert out is model and not report.functional and report.traced
    assert len(report.activations) == 3 and report.left_float == ("7 (GELU)", "8 (Hardtanh)")
    assert [type(m).__name__ for m in model] == ["Linear", "QuantReLU", "Linear", "QuantReLU", "Linear",
                                                 "QuantReLU", "Linear", "GELU", "Hardtanh"]
    assert model[3].quant.q_max == pytest.approx(6.0) and model[5].quant.q_max == pytest.approx(2.0)
    x = torch.randn(16, 5, generator=gen) * 2
    with torch.no_grad():
        h = torch.from_numpy(sigma(l1(x), SPEC))
        h = torch.from_numpy(sigma(l2(h), SPEC, 6.0))
        h = torch.from_numpy(sigma(l3(h), SPEC, 2.0))
        expected = torch.clamp(F.gelu(l4(h)), -1, 1)
        torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)


class Functional(nn.Module):
    def __init__(self, gen):
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.fc4 = lin(5, 8, gen), lin(8, 8, gen), lin(8, 8, gen), lin(8, 3, gen)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        h = torch.clamp(self.fc2(h), min=0, max=3.0)
        h = self.fc3(h).relu()
        h = F.relu6(h * 4) + torch.relu(h).clamp(min=0)
        return self.fc4(torch.sigmoid(h)) + x.clamp(-1, 1).sum()


def test_user_class_with_functional_calls(gen):
    model = Functional(gen)
    x = torch.randn(16, 5, generator=gen) * 2
    with pytest.warns(UserWarning, match=r"sigmoid.*torch\.sigmoid.*clamp.*Tensor\.clamp"):
        out, report = cg.quantize_model(model, act=SPEC, report=True)
    assert isinstance(out, torch.fx.GraphModule) and report.traced
    assert len(report.functional) == 6 and not report.activations
    assert sum(isinstance(m, cg.QuantReLU) for m in out.modules()) == 6
    assert out.fc1 is model.fc1  # the same parameters, not copies
    with torch.no_grad():
        h = torch.from_numpy(sigma(model.fc1(x), SPEC))
        h = torch.from_numpy(sigma(model.fc2(h), SPEC, 3.0))
        h = torch.from_numpy(sigma(model.fc3(h), SPEC))
        r = torch.from_numpy(sigma(h, SPEC))
        h = torch.from_numpy(sigma(h * 4, SPEC, 6.0)) + torch.from_numpy(sigma(r, SPEC))
        expected = model.fc4(torch.sigmoid(h)) + x.clamp(-1, 1).sum()
        torch.testing.assert_close(out(x), expected, rtol=1e-5, atol=1e-5)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act = nn.Linear(4, 4), nn.ReLU()

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return F.relu(self.fc(x))
        return self.act(self.fc(x))


def test_untraceable_forward_is_reported_and_modules_still_swapped():
    model = Untraceable()
    with pytest.warns(UserWarning, match="not traceable by torch.fx"):
        out, report = cg.quantize_model(model, act=SPEC, report=True)
    assert out is model and isinstance(model.act, cg.QuantReLU) and not report.traced
    quiet(Untraceable(), act=SPEC, functional=False)  # tracing skipped on request: no warning


def test_lenet5_float_to_quantized_and_one_step_trains(gen):
    model = LeNet5(10, bits=None, channels=(3, 4), hidden=12, generator=gen)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((i[0], o))) for m in model.modules()
             if isinstance(m, nn.ReLU)]
    x = torch.randn(6, 784, generator=gen)
    with torch.no_grad():
        model.eval()(x)
    first_pre = seen[0][0].clone()
    for h in hooks:
        h.remove()
    out, report = quiet(model, act=SPEC, report=True)
    assert out is model and len(report.activations) == 3 and report.left_float == ()
    acts = [m for m in model.modules() if isinstance(m, cg.QuantReLU)]
    assert len(acts) == 3 and not any(type(m) is nn.ReLU for m in model.modules())
    seen.clear()
    for a in acts:
        a.register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
    with torch.no_grad():
        model(x)
    torch.testing.assert_close(seen[0][0], first_pre, rtol=0, atol=0)  # same float pre-activation
    for pre, post in seen:
        np.testing.assert_allclose(post.numpy(), sigma(pre, SPEC), rtol=1e-6, atol=0)
    _one_step_changes_weights(model.train(), x, gen)


def _one_step_changes_weights(model, x, gen):
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(x), torch.randint(0, 10, (x.shape[0],), generator=gen)).backward()
    opt.step()
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert changed == list(before), f"unchanged: {sorted(set(before) - set(changed))}"


def test_mlp_float_to_quantized_forward_is_the_staircase(gen):
    model = cg.MLP(7, 9, 10, bits=None, generator=gen)
    out = quiet(model, act=SPEC)
    assert out is model and isinstance(model.act, cg.QuantReLU)
    assert model.two_layer_form() is not None  # the fast step applies to the converted MLP
    x = torch.randn(11, 7, generator=gen)
    with torch.no_grad():
        expected = model.fc2(torch.from_numpy(sigma(model.fc1(x), SPEC)))
        torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)
    _one_step_changes_weights(model, x, gen)


@pytest.mark.parametrize("learn", ["lsq", "pact"])
def test_learned_act_gives_each_site_its_own_parameter(learn, gen):
    model = Functional(gen)
    with pytest.warns(UserWarning):
        out = cg.quantize_model(model, act=cg.ActQuant(2, rounding="nearest", learn=learn))
    acts = [m for m in out.modules() if isinstance(m, cg.QuantReLU)]
    params = [p for a in acts for p in a.parameters()]
    assert len(params) == 6 and len({id(p) for p in params}) == 6
    clips = sorted(round(p.item(), 5) for p in params)
    if learn == "pact":  # clip levels start at the float clip (3, 6) or L·α
        assert 3.0 in clips and 6.0 in clips
    x = torch.randn(8, 5, generator=gen) * 2
    before = [p.item() for p in params]
    opt = torch.optim.SGD(out.parameters(), lr=0.1)
    F.cross_entropy(out(x), torch.randint(0, 3, (8,), generator=gen)).backward()
    opt.step()
    assert any(p.item() != b for p, b in zip(params, before, strict=True))


def test_keep_float_and_argument_errors(gen):
    model = nn.Sequential(lin(3, 4, gen), nn.ReLU(), lin(4, 4, gen), nn.ReLU())
    with pytest.warns(UserWarning, match=r"3 \(ReLU, kept\)"):
        cg.quantize_model(model, act=SPEC, keep_float=["3"])
    assert isinstance(model[1], cg.QuantReLU) and type(model[3]) is nn.ReLU
    with pytest.raises(cg.ConfigError, match="keep_float"):
        cg.quantize_model(model, act=SPEC, keep_float=["9"])
    with pytest.raises(cg.ConfigError, match="act"):
        cg.quantize_model(model, 2, act=SPEC)
    with pytest.raises(cg.ConfigError, match="act"):
        cg.quantize_model(model, act=SPEC, rounding="floor")
    with pytest.raises(cg.ConfigError, match="model"):
        cg.quantize_model("net", act=SPEC)
    plain = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    assert quiet(plain, act=None) is plain and type(plain[1]) is nn.ReLU  # nothing asked, nothing done
    assert isinstance(quiet(plain)[1], cg.QuantReLU) and plain[1].quant == cg.ActQuant(2)  # default: 2 bits


def numpy_binary(w):
    """Per-layer binary weights: mean|w|·sign(w) (Courbariaux et al. 2016 / XNOR-Net scale)."""
    w = w.detach().numpy()
    return np.abs(w).mean() * np.sign(w)


def test_weights_of_the_mlp_become_binary_and_train(gen):
    model = cg.MLP(7, 9, 10, bits=None, generator=gen)
    w1, w2 = model.fc1.weight.detach().clone(), model.fc2.weight.detach().clone()
    out, report = quiet(model, act=SPEC, weight=WeightQuant("binary"), report=True)
    assert out is model and len(report.weights) == 2 and len(report.activations) == 1
    assert type(model.fc1).__name__ == "QuantLinear" and torch.equal(model.fc1.weight, w1)  # latent = float
    assert model.two_layer_form() is None  # quantized weights: autograd, not the fixed-α fast step
    x = torch.randn(11, 7, generator=gen)
    h = sigma(x @ torch.from_numpy(numpy_binary(w1)).T + model.fc1.bias, SPEC)
    expected = torch.from_numpy(h) @ torch.from_numpy(numpy_binary(w2)).T + model.fc2.bias
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), expected, rtol=1e-5, atol=1e-5)
    _one_step_changes_weights(model.train(), x, gen)


def test_lenet5_weights_and_activations_with_first_and_last_kept_float(gen):
    model = LeNet5(10, bits=None, channels=(3, 4), hidden=12, generator=gen)
    wq = WeightQuant("uniform", bits=4, granularity="channel")
    with pytest.warns(UserWarning, match=r"features\.0 \(Conv2d, kept\); classifier\.3 \(Linear, kept\)"):
        out, report = cg.quantize_model(model, act=SPEC, weight=wq, keep_float=["features.0", "classifier.3"],
                                        report=True)
    kinds = [type(m).__name__ for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert kinds == ["Conv2d", "QuantConv2d", "QuantLinear", "Linear"] and len(report.weights) == 2
    assert len(report.activations) == 3
    conv = model.features[4]
    codes = conv.quantized_weight() / conv.quantized_weight().abs().amax(dim=(1, 2, 3), keepdim=True)
    assert all(len(torch.unique(c)) <= 15 for c in codes)  # ≤ 2^4 − 1 symmetric levels per channel
    _one_step_changes_weights(model.train(), torch.randn(6, 784, generator=gen), gen)


def test_other_weighted_layers_are_listed_and_bad_weight_spec_refused(gen):
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3, 2))
    with pytest.warns(UserWarning, match=r"0 \(Conv1d, weight not quantized\)"):
        cg.quantize_model(model, act=SPEC, weight=WeightQuant("ternary"))
    assert type(model[3]).__name__ == "QuantLinear"
    with pytest.raises(cg.ConfigError, match="weight"):
        cg.quantize_model(nn.Sequential(nn.Linear(2, 2)), weight="binary")


def test_freeze_learned_fixes_the_learned_values(gen):
    lsq, pact = cg.ActQuant(2, rounding="nearest", learn="lsq"), cg.ActQuant(3, rounding="nearest", learn="pact")
    model = nn.Sequential(nn.Linear(4, 6), cg.QuantReLU(lsq), nn.Sequential(nn.Linear(6, 6), cg.QuantReLU(pact)))
    with torch.no_grad():
        model[1].step.fill_(0.375)
        model[2][1].clip.fill_(2.8)
    x = torch.randn(64, 4, generator=gen)
    with torch.no_grad():
        learned = model(x)
    assert cg.freeze_learned(model) is model
    assert model[1].quant == cg.ActQuant(2, alpha=0.375, rounding="nearest", alpha_rule=lsq.alpha_rule)
    assert model[2][1].quant.alpha == pytest.approx(2.8 / 7) and model[2][1].quant.learn is None
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.0.weight", "2.0.bias"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), learned, rtol=1e-6, atol=1e-6)  # no ties in random data
    with torch.no_grad():
        bad = cg.QuantReLU(lsq)
        bad.step.fill_(-0.1)
    with pytest.raises(cg.ConfigError, match="alpha"):
        cg.freeze_learned(nn.Sequential(bad))



def test_learned_parameters_follow_the_model_dtype():
    lsq = cg.ActQuant(2, rounding="nearest", learn="lsq")
    model = cg.quantize_model(nn.Sequential(nn.Linear(3, 4), nn.ReLU()).double(), act=lsq)
    assert model[1].step.dtype == torch.float64
    net = Functional(torch.Generator().manual_seed(0)).double()
    with pytest.warns(UserWarning):
        out = cg.quantize_model(net, act=lsq)
    assert {p.dtype for p in out.parameters()} == {torch.float64}
    assert out(torch.randn(2, 5, dtype=torch.float64)).dtype == torch.float64
