import numpy as np
import pytest
import torch
from torch import nn

import coarsegrad as cg
from oracles import boundary_inputs, numpy_dmu


@pytest.mark.parametrize("name", list(cg.BUILTIN_STES))
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_backward_is_grad_times_mu_prime(name, bits, gen):
    alpha = cg.optimal_alpha(bits)
    q = (2**bits - 1) * alpha
    x_np = boundary_inputs(bits, alpha)
    x = torch.tensor(x_np, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(x.shape, dtype=torch.float64, generator=gen)
    y = cg.quantized_relu(x, bits, alpha, name)
    y.backward(upstream)
    np.testing.assert_array_equal(y.detach().numpy(), cg.staircase(x.detach(), bits, alpha).numpy())
    np.testing.assert_array_equal(x.grad.numpy(), upstream.numpy() * numpy_dmu(name, x_np, q))


def test_custom_ste_through_autograd():
    ste = cg.custom_ste("half", lambda x, q: 0.5 * (x > 0).to(x.dtype))
    x = torch.tensor([-1.0, 0.0, 0.3, 5.0], requires_grad=True)
    cg.quantized_relu(x, 2, 1.0, ste).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.5, 0.5]


def test_alpha_none_uses_optimal():
    layer = cg.QuantReLU(4)
    assert layer.alpha == cg.optimal_alpha(4)
    assert "bits=4" in repr(layer) and "clipped_relu" in repr(layer)


def test_two_layers_keep_their_own_settings():
    """Layers with different bits/STEs each use their own settings in forward and backward."""
    first, second = cg.QuantReLU(1, 1.0, "relu", "ceil"), cg.QuantReLU(4, 0.25, "clipped_relu", "ceil")
    x = torch.tensor([-0.5, 0.3, 2.0, 5.0], requires_grad=True)
    h = first(x) * 3.0  # levels {0, 3}
    z = second(h - 1.0)  # 4 bits, q = 3.75
    z.sum().backward()
    assert first(x).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert z.tolist() == [0.0, 2.0, 2.0, 2.0]
    # d z/d x = μ′₂(3σ₁(x) − 1)·3·μ′₁(x): μ′₂ = 1{0 < h−1 ≤ 3.75}, μ′₁ = 1{x > 0}
    assert x.grad.tolist() == [0.0, 3.0, 3.0, 3.0]


def test_model_with_two_quantized_layers_trains(gen):
    X, y = cg.orthogonal_subspaces(3, 12, 3, 40, generator=gen)
    model = nn.Sequential(nn.Linear(12, 32), cg.QuantReLU(4, None, "clipped_relu"),
                          nn.Linear(32, 32), cg.QuantReLU(2, None, "log_tailed_relu"), nn.Linear(32, 3))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for m in model:
            if isinstance(m, nn.Linear):
                m.reset_parameters()
    history = cg.train(model, X, y, cg.TrainConfig(optimizer="adam", lr=0.01, steps=300, log_every=10))
    assert model[1].bits == 4 and model[3].bits == 2
    assert model[3].ste.name == "log_tailed_relu"
    assert history.loss[-1] < 0.5 * history.loss[0]
    assert history.train_acc[-1] > 0.9


def test_quantize_model_replaces_nested_relus():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Tanh())
    with pytest.warns(UserWarning, match=r"left in float: 3 \(Tanh\)"):
        out = cg.quantize_model(model, 2, None, "relu")
    assert out is model
    acts = [m for m in model.modules() if isinstance(m, cg.QuantReLU)]
    assert len(acts) == 2 and not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert all(a.bits == 2 and a.ste.name == "relu" and a.alpha == cg.optimal_alpha(2) for a in acts)
    assert isinstance(model[3], nn.Tanh)


def test_quantize_model_validates():
    with pytest.raises(cg.ConfigError):
        cg.quantize_model(nn.Sequential(nn.ReLU()), 0, None, "relu")
    with pytest.raises(cg.ConfigError):
        cg.quantize_model(nn.Sequential(nn.ReLU()), 2, None, "nope")
