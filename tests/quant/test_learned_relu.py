"""QuantReLU with a learned step: the spec field, the parameter, forward and gradients."""

import numpy as np
import pytest
import torch

import coarsegrad as cg
from coarsegrad.errors import ConfigError
from coarsegrad.quant.learned import lsq_grad_scale


def test_learn_field_defaults_to_none_and_old_dicts_load():
    q = cg.ActQuant(2, rounding="nearest")
    assert q.learn is None and "learn" not in q.to_dict()  # fixed-α dicts unchanged
    assert cg.ActQuant.from_dict(q.to_dict()) == q
    learned = cg.ActQuant(2, rounding="nearest", learn="lsq")
    assert learned.to_dict()["learn"] == "lsq" and cg.ActQuant.from_dict(learned.to_dict()) == learned
    assert learned != q and "learn=lsq" in learned.describe()


@pytest.mark.parametrize("kwargs,field", [({"learn": "dorefa", "rounding": "nearest"}, "learn"),
                                          ({"learn": "pact", "rounding": "ceil"}, "learn")])
def test_bad_learn_is_config_error(kwargs, field):
    with pytest.raises(ConfigError) as info:
        cg.ActQuant(2, **kwargs)
    assert info.value.field == field


def test_fixed_alpha_relu_holds_no_parameter():
    assert list(cg.QuantReLU(cg.ActQuant(2, rounding="nearest")).state_dict()) == []


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("learn", ["lsq", "pact"])
def test_learned_relu_starts_as_the_nearest_staircase(bits, learn, gen):
    """Away from ties, σ of a fresh learned layer equals the fixed nearest staircase of α."""
    spec = cg.ActQuant(bits, rounding="nearest", learn=learn)
    layer = cg.QuantReLU(spec)
    (name, param), = layer.named_parameters()
    assert name == {"lsq": "step", "pact": "clip"}[learn]
    assert param.item() == pytest.approx(spec.alpha if learn == "lsq" else spec.q_max, rel=1e-7)
    x = torch.randn(8, 64, generator=gen) * spec.q_max
    ratio = (x / spec.alpha).double()
    x = x[:, ((ratio - ratio.floor() - 0.5).abs() > 1e-3).all(0)]  # drop columns near a tie
    fixed = cg.staircase(x, cg.ActQuant(bits, rounding="nearest"))
    torch.testing.assert_close(layer(x), fixed, rtol=1e-6, atol=1e-6)


def test_lsq_relu_gradients_use_features_per_example(gen):
    spec = cg.ActQuant(2, alpha=0.5, rounding="nearest", learn="lsq")
    layer = cg.QuantReLU(spec).double()
    x = torch.tensor([[-0.3, 0.2, 0.75, 1.6], [0.5, 1.0, 2.5, 0.1]], dtype=torch.float64, requires_grad=True)
    up = torch.randn(x.shape, dtype=torch.float64, generator=gen)
    layer(x).backward(up)
    v = x.detach().numpy() / 0.5
    dstep = np.where(v <= 0, 0.0, np.where(v >= 3, 3.0, np.round(v) - v)) * lsq_grad_scale(4, 3)
    np.testing.assert_allclose(layer.step.grad.item(), float((up.numpy() * dstep).sum()), rtol=1e-12)
    np.testing.assert_array_equal(x.grad.numpy(), up.numpy() * ((v >= 0) & (v <= 3)))


def test_pact_relu_clip_gradient():
    layer = cg.QuantReLU(cg.ActQuant(2, alpha=1.0, rounding="nearest", learn="pact"))
    x = torch.tensor([[-1.0, 0.4, 2.0, 3.0, 7.0]])
    layer(x).sum().backward()
    assert layer.clip.grad.item() == 2.0  # x ≥ a = 3: two elements


@pytest.mark.parametrize("learn", ["lsq", "pact"])
def test_one_sgd_step_moves_the_learned_parameter(learn, gen):
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), cg.QuantReLU(cg.ActQuant(2, rounding="nearest", learn=learn)),
                                torch.nn.Linear(7, 3))
    param = model[1].step if learn == "lsq" else model[1].clip
    before = param.item()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(32, 5, generator=gen) * 3
    torch.nn.functional.cross_entropy(model(x), torch.randint(0, 3, (32,), generator=gen)).backward()
    assert param.grad is not None and param.grad.item() != 0
    opt.step()
    assert param.item() != before

