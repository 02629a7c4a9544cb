import numpy as np
import pytest
import torch

import coarsegrad as cg
from oracles import numpy_dmu


def paper_formula(net, X, y):
    """Independent NumPy oracle, unit by unit (fixed V): mean_i (p_ik − 1{y_i=k}) μ′(w_kj·x_i) x_i."""
    act = net.act
    q = (2**act.bits - 1) * act.alpha
    W = net.W.detach().double().numpy()
    Xn, yn = X.double().numpy(), y.numpy()
    H = Xn @ W.T
    offset = {"ceil": 0.0, "nearest": 0.5, "floor": 1.0}[act.quant.rounding]  # t_j = (j + o)·α
    S = act.alpha * np.clip(np.ceil(H / act.alpha - offset), 0, 2**act.bits - 1)
    K, m = net.num_classes, net.units_per_class
    logits = np.stack([S[:, k * m:(k + 1) * m].sum(1) for k in range(K)], 1)
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    grad = np.zeros_like(W)
    for k in range(K):
        for j in range(m):
            u = k * m + j
            coef = (P[:, k] - (yn == k)) * numpy_dmu(act.ste.name, H[:, u], q)
            grad[u] = (coef[:, None] * Xn).mean(0)
    return grad


def spread_problem(ste, bits, second_layer, seed=0, rounding="nearest"):
    """Weights large enough that pre-activations cover (−q, 3q), so the STEs differ."""
    X, y = cg.orthogonal_subspaces(3, 15, 4, 40, generator=torch.Generator().manual_seed(seed))
    net = cg.TwoLayerNet(15, 3, 6, second_layer=second_layer, init_scale=3.0 * bits,
                         generator=torch.Generator().manual_seed(seed + 1),
                         quant=cg.ActQuant(bits, None, ste, rounding))
    if second_layer == "trained":
        with torch.no_grad():
            net.V.add_(0.3 * torch.randn(net.V.shape, generator=torch.Generator().manual_seed(9)))
    return X, y, net


@pytest.mark.parametrize("ste", list(cg.BUILTIN_STES))
@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("second_layer", ["fixed", "trained"])
def test_autograd_equals_closed_form(ste, bits, second_layer):
    X, y, net = spread_problem(ste, bits, second_layer)
    h = net.hidden(X)
    q = (2**bits - 1) * net.act.alpha
    assert (h > q).any() and (h < 0).any()
    torch.nn.functional.cross_entropy(net(X), y).backward()
    closed = cg.coarse_gradient(net, X, y)
    torch.testing.assert_close(net.W.grad.double(), closed["W"], atol=1e-6, rtol=0)
    if second_layer == "trained":
        torch.testing.assert_close(net.V.grad.double(), closed["V"], atol=1e-6, rtol=0)
    else:
        assert set(closed) == {"W"}


@pytest.mark.parametrize("rounding", ["ceil", "nearest"])
@pytest.mark.parametrize("ste", list(cg.BUILTIN_STES))
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_closed_form_equals_paper_formula(ste, bits, rounding):
    X, y, net = spread_problem(ste, bits, "fixed", seed=4, rounding=rounding)
    np.testing.assert_allclose(cg.coarse_gradient(net, X, y)["W"].numpy(), paper_formula(net, X, y),
                               atol=1e-12, rtol=0)


def test_stes_give_different_gradients():
    grads = {}
    for ste in cg.BUILTIN_STES:
        X, y, net = spread_problem(ste, 2, "fixed")
        grads[ste] = cg.coarse_gradient(net, X, y)["W"]
    names = list(grads)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(grads[a], grads[b]), (a, b)
