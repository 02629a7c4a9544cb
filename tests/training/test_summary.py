"""What a run reports: the final weights on the whole split, exact perfect_step, stop rules,
non-finite checks, the stop() hook, the float baseline and the buffered metrics file."""

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import coarsegrad as cg
from coarsegrad.config import ModelConfig
from coarsegrad.data.synthetic import orthogonal_subspaces
from coarsegrad.errors import DataError, TrainingDiverged
from coarsegrad.models.build import build_model
from coarsegrad.models.networks import MLP, TwoLayerNet
from coarsegrad.training.loop import TrainConfig, evaluate, train
from coarsegrad.training.metrics import MetricsFile


def problem(seed=0, samples=30):
    X, y = orthogonal_subspaces(3, 12, 3, samples, generator=torch.Generator().manual_seed(seed))
    return X, y


def net(seed=1, units=10, bits=2):
    return TwoLayerNet(12, 3, units, bits=bits, generator=torch.Generator().manual_seed(seed))


def oracle_loss_acc(model, X, y):
    """Independent of the loop: one forward pass of the whole set."""
    with torch.no_grad():
        out = model.eval()(X).double()
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())


def test_summary_is_the_final_weights_independent_of_log_every():
    X, y = problem()
    results = []
    for log_every in (1, 7, 300):
        model = net()
        h = train(model, X, y, TrainConfig(lr=1.0, steps=60, log_every=log_every, stop_at_perfect=False))
        loss, acc = oracle_loss_acc(model, X, y)
        assert h.final_loss == pytest.approx(loss, rel=1e-6) and h.final_acc == acc
        results.append((h.final_loss, h.final_acc, h.perfect_step, h.steps_run))
    assert results[0] == results[1] == results[2]


def test_full_batch_perfect_step_is_exact_whatever_log_every():
    X, y = problem()
    every_step = []
    train(net(), X, y, TrainConfig(lr=1.0, steps=400, log_every=1, stop_at_perfect=False), on_log=every_step.append)
    oracle = next(r["step"] for r in every_step if r["train_acc"] == 1.0)  # full-batch acc of each step
    k = next(k for k in range(5, 50) if (oracle + 1) % k != 0)  # a log_every that does not log that step
    h = train(net(), X, y, TrainConfig(lr=1.0, steps=400, log_every=k, stop_at_perfect=False))
    assert h.perfect_step == oracle
    stopped = train(net(), X, y, TrainConfig(lr=1.0, steps=400, log_every=k))
    assert stopped.perfect_step == oracle and stopped.steps_run == oracle and stopped.final_acc == 1.0


def test_one_perfect_mini_batch_does_not_stop_a_run():
    X, y = problem()
    seen = []
    config = TrainConfig(lr=1.0, batch_size=4, epochs=6, log_every=1)  # stop_at_perfect on (default)
    h = train(net(), X, y, config, on_log=seen.append)
    assert any(r["train_acc"] == 1.0 for r in seen)  # some batch was perfect early on ...
    assert h.steps_run == config.total_steps(X.shape[0])  # ... and the run went on
    assert h.perfect_step is None


def test_stop_at_perfect_every_checks_the_whole_split():
    X, y = problem()
    config = TrainConfig(lr=1.0, batch_size=8, epochs=200, stop_at_perfect_every=5)
    model = net()
    h = train(model, X, y, config)
    assert h.perfect_step is not None and h.perfect_step % 5 == 0
    assert h.steps_run == h.perfect_step < config.total_steps(X.shape[0])
    assert oracle_loss_acc(model, X, y)[1] == 1.0
    with pytest.raises(ValueError, match="stop_at_perfect_every"):
        TrainConfig(stop_at_perfect_every=-1)


def test_nonfinite_parameters_after_the_last_update_are_caught():
    X, y = problem()
    with pytest.raises(TrainingDiverged) as info:
        train(net(), X, y, TrainConfig(lr=1e308, steps=1, stop_at_perfect=False))
    assert info.value.parameter == "W" and info.value.step == 0
    assert "learning rate" in str(info.value) and "'W'" in str(info.value)


def test_evaluate_refuses_nonfinite_inputs_and_outputs():
    X, y = problem()
    model = net()
    bad = X.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(DataError, match="X"):
        evaluate(model, bad, y)
    with torch.no_grad():
        model.W[0, 0] = float("inf")
    with pytest.raises(DataError, match="model"):
        evaluate(model, X, y)


def test_stop_hook_checkpoints_and_resume_is_bit_identical():
    X, y = problem()
    config = TrainConfig(optimizer="momentum", lr=0.3, batch_size=8, epochs=4, log_every=3)
    whole = net()
    train(whole, X, y, config)
    calls, states = [], []

    def stop():
        calls.append(1)
        return len(calls) > 7

    part = net()
    h = train(part, X, y, config, stop=stop, on_checkpoint=states.append)
    assert h.interrupted and h.steps_run == 7 and len(states) == 1 and states[0].step == 7
    assert h.final_loss is None
    resumed = net(seed=99)
    h2 = train(resumed, X, y, config, resume=states[0])
    assert not h2.interrupted and h2.steps_run == config.total_steps(X.shape[0])
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["two_layer", "mlp", "lenet5"])
def test_float_baseline_is_plain_relu(name):
    config = ModelConfig(model=name, act="float", hidden=16)
    model = build_model(config, 784 if name == "lenet5" else 12, 3, seed=0)
    acts = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert acts and not any(type(m).__name__ == "QuantReLU" for m in model.modules())
    with pytest.raises(ValueError, match="act"):
        ModelConfig(act="int")


def test_float_two_layer_net_matches_its_formula(gen):
    model = TwoLayerNet(12, 3, 4, bits=None, generator=gen)
    x = torch.randn(5, 12, generator=gen)
    expected = torch.clamp(x @ model.W.t(), min=0.0) @ model.V.t()
    assert torch.allclose(model(x), expected)
    mlp = MLP(12, 8, 3, bits=None, generator=gen)
    assert torch.allclose(mlp(x), mlp.fc2(torch.relu(mlp.fc1(x))))


def test_float_model_trains_and_reports():
    X, y = problem()
    model = build_model(ModelConfig(act="float", units_per_class=10), 12, 3, seed=1)
    h = train(model, X, y, TrainConfig(lr=0.5, steps=50))
    assert h.final_acc == oracle_loss_acc(model, X, y)[1]


def test_metrics_file_writes_whole_lines_in_batches(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("")
    log = MetricsFile(path, interval=3600)
    for step in range(500):
        log.append({"step": step, "loss": 1.0 / (step + 1), "train_acc": 0.5})
    assert path.read_text() == ""  # buffered, not one write (and fsync) per line
    log.flush()
    text = path.read_text()
    assert text.endswith("\n") and [json.loads(line)["step"] for line in text.splitlines()] == list(range(500))
    eager = MetricsFile(tmp_path / "eager.jsonl", interval=0.0)
    for step in range(5):
        eager.append({"step": step})
        content = (tmp_path / "eager.jsonl").read_text()
        assert content.endswith("\n") and len(content.splitlines()) == step + 1


def test_library_entry_point_still_works():
    X, y = problem()
    h = cg.train(net(), X, y, cg.TrainConfig(lr=1.0, steps=5))
    assert h.final_acc is not None and h.steps_run <= 5


def test_resume_at_a_check_step_keeps_the_stop_rule():
    X, y = problem()
    config = TrainConfig(lr=1.0, batch_size=8, epochs=200, stop_at_perfect_every=5)
    whole, states = net(), []
    h = train(whole, X, y, config, checkpoint_every=5, on_checkpoint=states.append)
    assert h.perfect_step is not None and h.perfect_step >= 10
    resumed = net(seed=7)
    h2 = train(resumed, X, y, config, resume=next(s for s in states if s.step == h.perfect_step))
    assert h2.perfect_step == h.perfect_step and h2.steps_run == h.steps_run
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
