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
from coarsegrad.quant.spec import ActQuant
from coarsegrad.training.batched import train_batched
from coarsegrad.training.loop import TrainConfig, train
from coarsegrad.training.subspace import row_basis
from oracles import numpy_mu

STES = ["identity", "relu", "clipped_relu", "log_tailed_relu"]
ATOL = 1e-10


def problem(seed, bits, ste, kind="pairs", units=5, dtype=torch.float64, dim=12, samples=20, rounding="ceil"):
    X, y = cg.synthetic_data(3, dim, 3, samples, kind=kind, generator=torch.Generator().manual_seed(seed))
    net = TwoLayerNet(X.shape[1], 3, units, init_scale=0.5, generator=torch.Generator().manual_seed(seed + 1),
                      quant=ActQuant(bits, None, ste, rounding)).to(dtype)
    return X.to(dtype), y, net


def run_batched(cases, steps, lrs=None, **kwargs):
    lrs = lrs or [1.0] * len(cases)
    quants = [net.act.quant for _, _, net in cases]
    return train_batched(torch.stack([c[0] for c in cases]), torch.stack([c[1] for c in cases]),
                         torch.stack([c[2].W.detach() for c in cases]), quants, lrs, steps, num_classes=3, **kwargs)


@pytest.mark.parametrize("rounding,block_runs", [("ceil", 32), ("nearest", 32), ("floor", 2)])
def test_every_run_follows_its_own_train_trajectory(rounding, block_runs):
    cases = [problem(seed, bits, ste, kind, rounding=rounding) for ste in STES for bits in (1, 2, 4)
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


@pytest.mark.parametrize("rounding", ["ceil", "nearest"])
def test_low_rank_data_trains_in_its_subspace_on_the_same_trajectory(rounding):
    # rows projected onto a 9-dim subspace of R^12 in float64: rank 9 up to float64
    # rounding, so the batched program trains in 9 coordinates (row_basis) while train
    # works in all 12; the tolerance argument of the module docstring holds unchanged
    gen = torch.Generator().manual_seed(7)
    B = torch.linalg.qr(torch.randn(12, 9, dtype=torch.float64, generator=gen)).Q
    cases = []
    for ste in STES:
        for bits in (1, 2, 4):
            for seed, kind in ((0, "pairs"), (1, "iid")):
                X, y, net = problem(seed, bits, ste, kind, rounding=rounding)
                cases.append((X @ B @ B.t(), y, net))
    assert all(row_basis(c[0]).shape == (12, 9) for c in cases)
    full = [problem(seed, 2, ste, rounding=rounding) for seed, ste in ((5, "relu"), (6, "identity"))]
    assert all(row_basis(c[0]) is None for c in full)  # float32 data in float64: full rank
    steps = 40
    result = run_batched(cases, steps, stop_at_perfect=False)
    # with full-rank companions (blocks of two widths): every low-rank run unchanged, bit for bit
    mixed = run_batched(full[:1] + cases + full[1:], steps, stop_at_perfect=False)
    assert torch.equal(mixed.weights[1:-1], result.weights)
    for i, (X, y, net) in enumerate(cases):
        W0 = net.W.detach().clone()
        history = train(net, X, y, TrainConfig(lr=1.0, steps=steps, log_every=1, stop_at_perfect=False))
        torch.testing.assert_close(result.weights[i], net.W.detach(), atol=ATOL, rtol=0)
        assert not torch.equal(result.weights[i], W0)
        assert result.train_acc[i] == history.train_acc[-1]
        assert result.perfect_step[i] == history.perfect_step


def test_runs_stop_at_their_first_perfect_step_like_train():
    cases = [problem(seed, bits, ste, units=10, rounding=rounding) for ste in ("relu", "clipped_relu", "log_tailed_relu")
             for bits, rounding in ((2, "ceil"), (4, "ceil"), (1, "nearest")) for seed in (0, 1)]
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
    t = (np.arange(levels) + {"ceil": 0.0, "nearest": 0.5, "floor": 1.0}[quant.rounding]) * quant.alpha
    W = W.clone().requires_grad_(True)
    h = X @ W.t()
    codes = (h.detach().numpy()[..., None] > t).sum(-1)
    mu = torch.from_numpy(numpy_mu(quant.ste.name, h.detach().numpy(), levels * quant.alpha))
    # μ through torch for the gradient: the oracle's value, torch's derivative of the same formula
    mu_t = quant.mu(h)
    torch.testing.assert_close(mu_t.detach(), mu, atol=1e-12, rtol=0)
    sigma = quant.alpha * torch.from_numpy(codes).to(h.dtype) + mu_t - mu_t.detach()
    units = W.shape[0] // 3
    logits = sigma.view(X.shape[0], 3, units).sum(-1)
    torch.nn.functional.cross_entropy(logits, y).backward()
    return (W - lr * W.grad).detach()


@pytest.mark.parametrize("rounding", ["nearest", "floor", "ceil"])
def test_every_rounding_follows_an_independent_reference(rounding):
    cases, quants = [], []
    for i, ste in enumerate(STES):
        for bits in (1, 2, 4):
            X, y, net = problem(i, bits, ste, kind="iid")
            cases.append((X, y, net.W.detach().clone()))
            quants.append(ActQuant(bits, None, ste, rounding))
    steps = 15
    result = train_batched(torch.stack([c[0] for c in cases]), torch.stack([c[1] for c in cases]),
                           torch.stack([c[2] for c in cases]), quants, [1.0] * len(cases), steps,
                           num_classes=3, stop_at_perfect=False)
    for i, (X, y, W) in enumerate(cases):
        for _ in range(steps):
            W = reference_step(X, y, W, quants[i], 1.0)
        torch.testing.assert_close(result.weights[i], W, atol=ATOL, rtol=0)


def test_bad_inputs():
    X, y, net = problem(0, 2, "relu")
    W = net.W.detach()
    q = ActQuant(2, 0.5, "relu")
    with pytest.raises(DataError):
        train_batched(X, y, W, [q], [1.0], 3, num_classes=3)
    with pytest.raises(ConfigError) as info:
        train_batched(X[None], y[None], W[None], [q], [0.0], 3, num_classes=3)
    assert info.value.field == "lr"
    with pytest.raises(ConfigError) as info:
        train_batched(X[None], y[None], W[None], [q, q], [1.0], 3, num_classes=3)
    with pytest.raises(ConfigError) as info:
        train_batched(X[None], y[None], W[None], [(2, 0.5, "relu")], [1.0], 3, num_classes=3)
    assert info.value.field == "quants"
    with pytest.raises(DataError):
        train_batched(X[None], (y + 5)[None], W[None], [q], [1.0], 3, num_classes=3)
