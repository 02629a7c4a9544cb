"""benchmarks/gpu_bench.py, checked on the CPU: its hand-written capturable training step
must compute what the library computes, so that a GPU run of it measures the right thing."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import coarsegrad as cg

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_bench.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_both(gpu_bench, mutate=None):
    """6 steps of the script's trainer and of autograd + torch SGD momentum from equal weights;
    returns (trainer params, reference params, start)."""
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(512, 784, generator=gen), torch.randint(0, 10, (512,), generator=gen)
    hidden, rows, lr = 48, 128, 0.05
    trainer = gpu_bench.Trainer(X, y, hidden, rows, lr, "fp32")
    if mutate is not None:
        mutate(trainer)
    model = cg.MLP(784, hidden, 10, bits=2, ste="clipped_relu", generator=torch.Generator().manual_seed(3))
    ours = [model.fc1.weight, model.fc1.bias, model.fc2.weight, model.fc2.bias]
    assert model.act.alpha == trainer.alpha
    with torch.no_grad():
        torch._foreach_copy_(trainer.params, [p.detach() for p in ours])
    start = [p.detach().clone() for p in ours]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _step in range(6):
        idx = torch.randperm(512, generator=gen)[:rows]
        trainer.step(idx)
        optimizer.zero_grad()
        F.cross_entropy(model(X[idx]), y[idx]).backward()
        optimizer.step()
    assert float(trainer.loss) > 0 and 0 <= int(trainer.correct) <= 6 * rows
    return [p.detach() for p in trainer.params], [p.detach() for p in ours], start


def test_trainer_steps_equal_autograd_sgd_momentum(gpu_bench):
    got, want, start = _run_both(gpu_bench)
    for g, w, before in zip(got, want, start, strict=True):
        assert float((w - before).abs().max()) > 1e-3  # really trained
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_trainer_is_the_library_step(gpu_bench):
    from coarsegrad.training.fast import FastStep

    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(64, 784, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    trainer = gpu_bench.Trainer(X, y, 16, 32, 0.01, "fp32")
    assert type(trainer.fast) is FastStep and isinstance(trainer.model, cg.MLP)
    assert not hasattr(gpu_bench, "staircase_codes") and "EagerQuantizer(2" not in SCRIPT.read_text()


def test_a_changed_momentum_is_detected(gpu_bench):
    """The comparison can fail: the same trainer with momentum 0.8 does not match."""
    def mutate(trainer):
        for group in trainer.optimizer.param_groups:
            group["momentum"] = 0.8

    got, want, _ = _run_both(gpu_bench, mutate)
    with pytest.raises(AssertionError):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_epoch_covers_floor_n_over_b_batches_of_distinct_rows(gpu_bench):
    gen = torch.Generator().manual_seed(1)
    X, y = torch.randn(300, 784, generator=gen), torch.randint(0, 10, (300,), generator=gen)
    epoch = gpu_bench.Epoch(gpu_bench.Trainer(X, y, 16, 64, 0.01, "fp32"), 64, graph=False)
    epoch()
    assert epoch.steps == 4
    rows = epoch.order.flatten()
    assert rows.unique().numel() == 4 * 64 and int(rows.max()) < 300


def test_dry_run_writes_a_record(gpu_bench, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    out = tmp_path / "gpu.json"
    gpu_bench.main(["--dry-run", "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["dry_run"] is True and record["card"] == "cpu (dry run)"
    for key in ("fp32_batch1024_epoch_s", "fp32_full_batch_epoch_s", "bf16_batch1024_epoch_s"):
        assert record[key] > 0
    assert record["activation"]["elements"] == 10**5
