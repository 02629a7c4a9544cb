"""The synthetic-step benchmark: its plain loop does the same work as the library's step."""

import torch

from coarsegrad.bench.synthetic import format_synthetic, plain_loop, synthetic_step_bench
from coarsegrad.data.synthetic import orthogonal_subspaces
from coarsegrad.models.networks import TwoLayerNet
from coarsegrad.quant.spec import ActQuant
from coarsegrad.training.loop import TrainConfig, train


def test_plain_loop_matches_coarse_gradient_descent(gen):
    X, y = orthogonal_subspaces(3, 12, 3, 20, generator=gen)
    model = TwoLayerNet(12, 3, 10, generator=torch.Generator().manual_seed(5),
                        quant=ActQuant(2, rounding="ceil"))  # the plain loop's ⌈h/α⌉
    start = model.W.detach().clone()
    W = plain_loop(X, y, start, model.V, 2, float(model.act.alpha), 0.5, 25)
    train(model, X, y, TrainConfig(lr=0.5, steps=25, stop_at_perfect=False))
    assert not torch.equal(W, start)
    assert torch.allclose(W, model.W.detach(), rtol=1e-4, atol=1e-5)


def test_synthetic_step_bench_reports_a_ratio_per_thread_count():
    before = torch.get_num_threads()
    result = synthetic_step_bench(steps=5, repeats=1, threads=(1,))
    assert torch.get_num_threads() == before
    (row,) = result["rows"]
    assert row["threads"] == 1 and row["ours_ms"] > 0 and row["plain_ms"] > 0
    assert abs(row["ratio"] - row["ours_ms"] / row["plain_ms"]) < 1e-9  # one round: the ratio of the times
    assert "| 1 |" in format_synthetic(result)
