"""The batched trainer against `coarsegrad.train` run by run, and its quantizer against NumPy.

Tolerance of the trajectory tests: float64, atol 1e-10 on the weights after k steps.
The batched program computes the same formulas in another order (bmm vs mm, exact
integer code sums vs the float product σVᵀ, (η/N)·g folded before the product), so
each step differs by float64 rounding, ~1e-16 relative, and k ≤ 40 steps of size
O(1) keep the difference near 1e-14. The staircase codes are equal as long as no
pre-activation lies within that rounding of a threshold, an event of probability
~1e-13 here; and a flipped code would change a weight by ~η/N·|x| ≈ 1e-3, far above
the tolerance, so the test fails loudly instead of passing by luck. In float32 the same
comparison would need codes that are equal step after step, which rounding at 1e-7
does not guarantee over hundreds of steps; hence float64 for trajectories, and the
steps-to-perfect compared exactly in float64 too.
"""

import numpy as np
import pytest
import torch

import coarsegrad as cg
from coarsegrad.errors import ConfigError, DataError
from coarsegrad.models.networks import TwoLayerNet
from coarsegrad.training.batched import ROUNDINGS, Quantizer, Staircase, train_batched
from coarsegrad.training.loop import TrainConfig, train
from oracles import numpy_mu

STES = ["identity", "relu", "clipped_relu", "log_tailed_relu"]
ATOL = 1e-10


def problem(seed, bits, ste, kind="pairs", units=5, dtype=torch.float64, dim=12, samples=20):
    X, y = cg.synthetic_data(3, dim, 3, samples, kind=kind, generator=torch.Generator().manual_seed(seed))
    net = TwoLayerNet(X.shape[1], 3, units, bits, None, ste, init_scale=0.5,
                      generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    return X.to(dtype), y, net


def run_batched(cases, steps, lrs=None, **kwargs):
    lrs = lrs or [1.0] * len(cases)
    quants = [Quantizer(net.act.bits, net.act.alpha, net.act.ste.name, "ceil") for _, _, net in cases]
    return train_batched(torch.stack([c[0] for c in cases]), torch.stack([c[1] for c in cases]),
                         torch.stack([c[2].W.detach() for c in cases]), quants, lrs, steps, num_classes=3, **kwargs)


@pytest.mark.parametrize("block_runs", [32, 2])
def test_every_run_follows_its_own_train_trajectory(block_runs):
    cases = [problem(seed, bits, ste, kind) for ste in STES for bits in (1, 2, 4)
             for seed, kind in ((0, "pairs"), (1, "iid"))]
    lrs = [1.0 if i % 3 else 0.5 for i in range(len(cases))]
    steps = 40
    result = run_batched(cases, steps, lrs, stop_at_perfect=False, block_runs=block_runs)
    for i, (X, y, net) in enumerate(cases):
        history = train(net, X, y, TrainConfig(lr=lrs[i], steps=steps, log_every=1, stop_at_perfect=False))
        torch.testing.assert_close(result.weights[i], net.W.detach(), atol=ATOL, rtol=0)
        assert result.train_acc[i] == history.train_acc[-1]
        assert result.loss[i] == pytest.approx(history.loss[-1], rel=1e-12)
        assert result.perfect_step[i] == history.perfect_step
        assert result.steps_run[i] == steps and result.diverged_step[i] is None


def test_runs_stop_at_their_first_perfect_step_like_train():
    cases = [problem(seed, bits, ste, units=10) for ste in ("relu", "clipped_relu", "log_tailed_relu")
             for bits in (2, 4) for seed in (0, 1)]
    steps = 400
    result = run_batched(cases, steps)
    stopped = 0
    for i, (X, y, net) in enumerate(cases):
        history = train(net, X, y, TrainConfig(lr=1.0, steps=steps, log_every=1))
        assert result.perfect_step[i] == history.perfect_step
        assert result.steps_run[i] == history.steps_run
        torch.testing.assert_close(result.weights[i], net.W.detach(), atol=ATOL, rtol=0)
        stopped += history.perfect_step is not None and history.perfect_step < steps
    assert stopped >= len(cases) // 2  # the case exercises stopping, not only full-length runs


def reference_step(X, y, W, quant, lr):
    """An independent coarse-GD step: codes by the NumPy oracle, μ′ through autograd of
    μ (σ = α·c(h) + μ(h) − stopgrad(μ(h)) has value α·c and gradient μ′), CE by torch."""
    levels = 2**quant.bits - 1
    t = (np.arange(levels) + ROUNDINGS[quant.rounding]) * quant.alpha
    W = W.clone().requires_grad_(True)
    h = X @ W.t()
    codes = (h.detach().numpy()[..., None] > t).sum(-1)
    mu = torch.from_numpy(numpy_mu(quant.ste, h.detach().numpy(), levels * quant.alpha))
    # μ through torch for the gradient: the oracle's value, torch's derivative of the same formula
    mu_t = cg.get_ste(quant.ste).mu(h, quant.bits, quant.alpha)
    torch.testing.assert_close(mu_t.detach(), mu, atol=1e-12, rtol=0)
    sigma = quant.alpha * torch.from_numpy(codes).to(h.dtype) + mu_t - mu_t.detach()
    units = W.shape[0] // 3
    logits = sigma.view(X.shape[0], 3, units).sum(-1)
    torch.nn.functional.cross_entropy(logits, y).backward()
    return (W - lr * W.grad).detach()


@pytest.mark.parametrize("rounding", ["nearest", "floor", "ceil"])
def test_other_roundings_follow_an_independent_reference(rounding):
    cases, quants = [], []
    for i, ste in enumerate(STES):
        for bits in (1, 2, 4):
            X, y, net = problem(i, bits, ste, kind="iid")
            cases.append((X, y, net.W.detach().clone()))
            quants.append(Quantizer(bits, cg.optimal_alpha(bits), ste, rounding))
    steps = 15
    result = train_batched(torch.stack([c[0] for c in cases]), torch.stack([c[1] for c in cases]),
                           torch.stack([c[2] for c in cases]), quants, [1.0] * len(cases), steps,
                           num_classes=3, stop_at_perfect=False)
    for i, (X, y, W) in enumerate(cases):
        for _ in range(steps):
            W = reference_step(X, y, W, quants[i], 1.0)
        torch.testing.assert_close(result.weights[i], W, atol=ATOL, rtol=0)


def staircase_inputs(quant, dtype):
    """Every threshold t_j = fl((j + δ)α), its float neighbours, and random values."""
    levels = 2**quant.bits - 1
    t = (torch.arange(-1, levels + 2, dtype=dtype) + ROUNDINGS[quant.rounding]) * quant.alpha
    inf = torch.tensor(float("inf"), dtype=dtype)
    rand = torch.randn(3000, generator=torch.Generator().manual_seed(quant.bits), dtype=dtype) * levels * quant.alpha
    return torch.cat([t, torch.nextafter(t, inf), torch.nextafter(t, -inf), rand, torch.zeros(1, dtype=dtype)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rounding", list(ROUNDINGS))
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("alpha", [None, 0.3, 1.7])
def test_codes_count_the_thresholds_exactly(dtype, rounding, bits, alpha):
    quant = Quantizer(bits, cg.optimal_alpha(bits) if alpha is None else alpha, "relu", rounding)
    x = staircase_inputs(quant, dtype)
    levels = 2**bits - 1
    # the oracle: thresholds as NumPy products in the same dtype, codes by counting
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    t = (np.arange(levels) + ROUNDINGS[rounding]).astype(np_dtype) * np_dtype(quant.alpha)
    expected = (x.numpy()[:, None] > t[None, :]).sum(1)
    h = x.view(1, 1, -1).clone()
    codes, s1, s2, f = (torch.empty_like(h) for _ in range(4))
    Staircase(quant, dtype).forward(h, codes, s1, s2, f)
    np.testing.assert_array_equal(codes.view(-1).numpy(), expected)
    assert torch.equal(h.view(-1), x)  # h is read, never modified
    if rounding == "ceil":
        assert torch.equal(codes.view(-1), cg.staircase_codes(x, bits, quant.alpha))


def test_bad_inputs():
    X, y, net = problem(0, 2, "relu")
    W = net.W.detach()
    q = Quantizer(2, 0.5, "relu")
    with pytest.raises(DataError):
        train_batched(X, y, W, [q], [1.0], 3, num_classes=3)
    with pytest.raises(ConfigError) as info:
        train_batched(X[None], y[None], W[None], [q], [0.0], 3, num_classes=3)
    assert info.value.field == "lr"
    with pytest.raises(ConfigError) as info:
        train_batched(X[None], y[None], W[None], [q, q], [1.0], 3, num_classes=3)
    with pytest.raises(ConfigError) as info:
        Quantizer(2, 0.5, "relu", "round")
    assert info.value.field == "rounding"
    with pytest.raises(DataError):
        train_batched(X[None], (y + 5)[None], W[None], [q], [1.0], 3, num_classes=3)
