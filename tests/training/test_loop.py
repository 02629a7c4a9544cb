import math

import pytest
import torch

import coarsegrad as cg


def problem(seed=0, bits=2, ste="clipped_relu", **model_kwargs):
    X, y = cg.orthogonal_subspaces(4, 40, 5, 100, generator=torch.Generator().manual_seed(seed))
    net = cg.TwoLayerNet(40, 4, 20, bits=bits, ste=ste, generator=torch.Generator().manual_seed(seed + 1),
                         **model_kwargs)
    return X, y, net


@pytest.mark.parametrize("second_layer", ["fixed", "trained"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 399])
def test_chunked_gradient_equals_unchunked(second_layer, chunk):
    X, y, net = problem(second_layer=second_layer)
    history = cg.train(net, X, y, cg.TrainConfig(lr=1e-30, steps=1, chunk_size=chunk, stop_at_perfect=False))
    # a negligible step leaves the weights; compare the accumulated gradient with one piece
    chunked = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(X), y)
    loss.backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(chunked[name], p.grad, atol=1e-6, rtol=0)
    assert history.loss[0] == pytest.approx(loss.item(), abs=1e-6)


@pytest.mark.parametrize("optimizer,batch", [("sgd", None), ("momentum", 64), ("adam", 50)])
def test_same_seed_bit_identical(optimizer, batch):
    weights = []
    for _ in range(2):
        X, y, net = problem(seed=3)
        cg.train(net, X, y, cg.TrainConfig(optimizer=optimizer, lr=0.05, batch_size=batch, steps=30, seed=5))
        weights.append(net.W.detach().clone())
    assert torch.equal(weights[0], weights[1])
    X, y, net = problem(seed=3)
    if batch is not None:  # another seed, another batch order
        cg.train(net, X, y, cg.TrainConfig(optimizer=optimizer, lr=0.05, batch_size=batch, steps=30, seed=6))
        assert not torch.equal(net.W, weights[0])


def test_full_batch_coarse_gd_reaches_perfect_classification():
    X, y, net = problem(seed=0, bits=4)
    history = cg.train(net, X, y, cg.TrainConfig(lr=1.0, steps=2000, log_every=1))
    assert history.perfect_step is not None
    assert history.train_acc[-1] == 1.0
    with torch.no_grad():
        assert (net(X).argmax(1) == y).all()  # the stop happened before any further update


def test_epochs_and_logging():
    X, y, net = problem()
    seen = []
    history = cg.train(net, X, y, cg.TrainConfig(lr=0.1, batch_size=100, epochs=3, log_every=2,
                                                 stop_at_perfect=False), on_log=seen.append)
    assert history.steps_run == 12  # 4 batches × 3 epochs
    assert history.step == [1, 3, 5, 7, 9, 11] and len(seen) == 6
    assert set(seen[0]) == {"step", "loss", "train_acc", "lr"}


def test_non_finite_loss_names_the_step():
    X, y, _ = problem()
    net = cg.MLP(40, 16, 4, ste="identity", generator=torch.Generator().manual_seed(0))
    with pytest.raises(cg.TrainingDiverged) as info:
        cg.train(net, X * 1e20, y, cg.TrainConfig(lr=1e30, steps=50, stop_at_perfect=False))
    assert info.value.step >= 1  # the first loss (before any update) is finite
    assert f"step {info.value.step}" in str(info.value)
    assert not math.isfinite(info.value.loss)


@pytest.mark.parametrize("X,y,field", [
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), "X"),
    (torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]), "X"),
    (torch.zeros(3, 2), torch.tensor([0, 1]), "y"),
    (torch.zeros(2, 2, dtype=torch.int64), torch.tensor([0, 1]), "X"),
    (torch.zeros(2, 2), torch.tensor([0.0, 1.0]), "y"),
    (torch.zeros(2, 2), torch.tensor([0, -1]), "y"),
    (torch.zeros(2, 2), torch.tensor([0, 7]), "y"),
])
def test_bad_data(X, y, field):
    net = cg.TwoLayerNet(2, 2, 3)
    with pytest.raises(cg.DataError) as info:
        cg.train(net, X, y, cg.TrainConfig(steps=1))
    assert info.value.field == field


@pytest.mark.parametrize("kwargs,field", [
    ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"optimizer": "rmsprop"}, "optimizer"),
    ({"steps": 0}, "steps"), ({"batch_size": -2}, "batch_size"), ({"steps": 5, "epochs": 2}, "steps"),
    ({"momentum": 1.0}, "momentum"), ({"chunk_size": 0}, "chunk_size"), ({"seed": -1}, "seed"),
])
def test_bad_config(kwargs, field):
    with pytest.raises(cg.ConfigError) as info:
        cg.TrainConfig(**kwargs)
    assert info.value.field == field


def test_batch_size_zero_means_full_batch():
    assert cg.TrainConfig(batch_size=0).batch_size is None
    assert cg.TrainConfig().steps == 1000
