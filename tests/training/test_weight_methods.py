"""The weight-training rules through train(): BinaryConnect STE (clip), BCGD (blend) and
BinaryRelax (λ schedule, hard phase), step by step for several steps against a NumPy
re-implementation of each update (a tiny linear softmax model, full batch, plain SGD
with lr η, and momentum for BCGD)."""

import numpy as np
import pytest
import torch
from torch import nn

import coarsegrad as cg
from coarsegrad.quant.qlayers import QuantLinear
from coarsegrad.quant.weight_spec import WeightQuant
from coarsegrad.training.weight_methods import WeightMethods
from oracles import numpy_weight_codes

LR = 0.5


def _problem(scale=1.0):
    g = torch.Generator().manual_seed(7)
    X = torch.randn(12, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=g)
    W0 = scale * torch.randn(3, 5, generator=g, dtype=torch.float64)
    b0 = 0.1 * torch.randn(3, generator=g, dtype=torch.float64)
    return X, y, W0, b0


def _model(spec, W0, b0):
    layer = QuantLinear(5, 3, weight_quant=spec, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(W0)
        layer.bias.copy_(b0)
    return nn.Sequential(layer)


def _train(spec, steps, optimizer="sgd", scale=1.0):
    X, y, W0, b0 = _problem(scale)
    model = _model(spec, W0, b0)
    cg.train(model, X, y, cg.TrainConfig(optimizer=optimizer, lr=LR, steps=steps, stop_at_perfect=False))
    return model[0]


def _grads(X, y, W_eff, b):
    """∂/∂(W, b) of mean CE of softmax(X W_effᵀ + b), written out."""
    logits = X @ W_eff.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = (p - np.eye(3)[y]) / X.shape[0]
    return g.T @ X, g.sum(0)


def _q(w, spec):
    codes, scales = numpy_weight_codes(w, spec.kind, spec.bits, spec.granularity)
    return scales * codes


def _numpy_run(spec, steps, optimizer="sgd", scale=1.0, momentum=0.9):
    X, y, W0, b0 = (t.numpy() for t in _problem(scale))
    w, b = W0.copy(), b0.copy()
    mw, mb = np.zeros_like(w), np.zeros_like(b)
    lam, hard = spec.lam0, spec.hard_after == 0
    for t in range(steps):
        q = _q(w, spec)
        if spec.method == "binaryrelax":
            w_eff = q if hard else (lam * q + w) / (lam + 1)
        else:
            w_eff = q
        gw, gb = _grads(X, y, w_eff, b)
        if spec.method == "ste" and spec.clip is not None:
            gw = gw * (np.abs(w) <= spec.clip)
        if optimizer == "momentum":
            mw, mb = (gw, gb) if t == 0 else (momentum * mw + gw, momentum * mb + gb)
            gw, gb = mw, mb
        w_new, b = w - LR * gw, b - LR * gb
        if spec.method == "bcgd":
            w_new = w_new + spec.rho * (q - w)  # (1 − ρ)w + ρQ(w) − η·g(Q(w))
        if spec.method == "ste" and spec.clip is not None:
            w_new = np.clip(w_new, -spec.clip, spec.clip)
        if spec.method == "binaryrelax":
            if spec.hard_after is not None and t + 1 >= spec.hard_after:
                hard = True
            else:
                lam *= spec.lam_growth
        w = w_new
    return w, b, lam, hard


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
@pytest.mark.parametrize("spec,optimizer", [
    (WeightQuant("binary", method="ste", clip=1.0), "sgd"),
    (WeightQuant("uniform", 3, "channel", method="ste", clip=0.8), "sgd"),
    (WeightQuant("binary", method="bcgd", rho=0.1), "sgd"),
    (WeightQuant("ternary", granularity="channel", method="bcgd", rho=0.3), "momentum"),
    (WeightQuant("uniform", 2, method="binaryrelax", lam0=0.5, lam_growth=2.0), "sgd"),
    (WeightQuant("binary", granularity="channel", method="binaryrelax", lam0=1.0, lam_growth=1.5, hard_after=2), "sgd"),
])
def test_rule_step_by_step_against_numpy(spec, optimizer, steps):
    layer = _train(spec, steps, optimizer, scale=1.5)
    w, b, lam, hard = _numpy_run(spec, steps, optimizer, scale=1.5)
    np.testing.assert_allclose(layer.weight.detach().numpy(), w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.bias.detach().numpy(), b, rtol=1e-10, atol=1e-12)
    assert float(layer.relax_lambda) == pytest.approx(lam, rel=1e-12) and bool(layer.relax_hard) == hard


def test_the_rules_change_something():
    """The oracle comparisons above would pass for a no-op rule only if the rule had no effect:
    clipping bites, the blend moves w, λ grows and the hard phase starts."""
    clip = _train(WeightQuant("binary", method="ste", clip=1.0), 3, scale=1.5)
    assert float(clip.weight.detach().abs().max()) == 1.0
    no_clip = _train(WeightQuant("binary", method="ste", clip=None), 3, scale=1.5)
    assert float(no_clip.weight.detach().abs().max()) > 1.0
    blended = _train(WeightQuant("binary", method="bcgd", rho=0.1), 3)
    plain = _train(WeightQuant("binary", method="bcgd", rho=0.0), 3)
    assert not torch.allclose(blended.weight, plain.weight)
    relax = _train(WeightQuant("binary", method="binaryrelax", lam0=1.0, lam_growth=2.0, hard_after=3), 5)
    assert float(relax.relax_lambda) == 4.0 and bool(relax.relax_hard)  # steps 0, 1, 2 used λ = 1, 2, 4; hard from 3


def test_fractional_hard_after_uses_the_run_length():
    spec = WeightQuant("binary", method="binaryrelax", lam_growth=2.0, hard_after=0.5)
    layer = _train(spec, 4)
    assert bool(layer.relax_hard) and float(layer.relax_lambda) == 2.0  # T = ⌈0.5·4⌉ = 2: steps 0, 1 used λ = 1, 2
    assert WeightMethods(nn.Sequential(QuantLinear(2, 2, weight_quant=spec)), 10)._hard_step


def test_no_quantized_weights_no_methods():
    model = nn.Sequential(nn.Linear(3, 2))
    methods = WeightMethods(model, 5)
    assert not methods
    before = model[0].weight.detach().clone()
    methods.before_step()
    methods.after_step(0)
    assert torch.equal(model[0].weight, before)


def test_resume_continues_the_schedule_exactly():
    spec = WeightQuant("binary", method="binaryrelax", lam0=0.5, lam_growth=1.5, hard_after=3)
    X, y, W0, b0 = _problem()
    config = cg.TrainConfig(lr=LR, steps=5, stop_at_perfect=False)
    straight = _model(spec, W0, b0)
    states = []
    cg.train(straight, X, y, config, checkpoint_every=2, on_checkpoint=states.append)
    resumed = _model(spec, torch.zeros(3, 5, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    cg.train(resumed, X, y, config, resume=states[0])
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_bcgd_blend_reuses_the_forward_projection(monkeypatch):
    """One Q(w) per BCGD step (the forward's), and a fresh one when w changed after the forward."""
    import coarsegrad.quant.qlayers as qlayers
    calls = []
    project = qlayers.project
    monkeypatch.setattr(qlayers, "project", lambda *a, **k: calls.append(1) or project(*a, **k))
    spec = WeightQuant("ternary", granularity="channel", method="bcgd", rho=0.3)
    X, y, W0, b0 = _problem()
    layer = _model(spec, W0, b0)[0]
    methods = WeightMethods(nn.Sequential(layer))
    torch.nn.functional.cross_entropy(layer(X), y).backward()
    q = layer.quantized_weight()
    calls.clear()
    methods.before_step()
    assert calls == []  # the forward's Q(w_t)
    assert torch.equal(methods._blend[0][1], q - layer.weight)
    layer(X)
    calls.clear()
    with torch.no_grad():
        layer.weight.mul_(2.0)  # w moved after the forward: its Q(w) no longer applies
    methods.before_step()
    assert calls == [1]
    assert torch.equal(methods._blend[0][1], layer.quantized_weight() - layer.weight)
