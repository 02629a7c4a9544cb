"""The repelled study on a tiny synthetic data set: records, shared start point, gradient oracle."""

import dataclasses
import json
import math

import pytest
import torch
from torch.nn import functional as F

from coarsegrad import ConfigError
from coarsegrad.cli.main import main
from coarsegrad.data.splits import DatasetSplits
from coarsegrad.models.coarse import coarse_gradient
from coarsegrad.models.networks import MLP, TwoLayerNet
from coarsegrad.quant.ste import get_ste
from coarsegrad.theory import repelled_report
from coarsegrad.theory.repelled import (
    RepelledConfig,
    coarse_gradient_norms,
    make_model,
    run_repelled,
    weights_sha256,
)
from coarsegrad.training.loop import TrainConfig, train

STES = ("identity", "relu", "clipped_relu", "log_tailed_relu")


def _tiny(gen: torch.Generator, n: int = 240, d: int = 12, k: int = 3) -> DatasetSplits:
    """k classes from a random linear teacher (learnable, not separable by a staircase net at once)."""
    teacher = torch.randn(d, k, generator=gen)
    x = torch.randn(n + 90, d, generator=gen)
    y = (x @ teacher).argmax(1)
    return DatasetSplits("tiny", x[:n].contiguous(), y[:n], x[n:].contiguous(), y[n:], 0.0, 1.0, "synthetic",
                         num_classes=k)


def _cfg(**kw) -> RepelledConfig:
    return RepelledConfig(**{"hidden": 16, "bits": (2,), "seeds": 2, "lrs": (0.2, 1.0), "steps": 8,
                             "batch_size": 32, "eval_at": (0, 4, 8), "workers": 1,
                             "pretrain": {"optimizer": "sgd", "lr": 0.5, "batch_size": 40, "epochs": 3}, **kw})


@pytest.fixture(scope="module")
def tiny_run():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster on a shared machine
    try:
        data = _tiny(torch.Generator().manual_seed(7))
        cfg = _cfg()
        yield cfg, data, run_repelled(cfg, data=data)
    finally:
        torch.set_num_threads(threads)


def test_records_are_flat_and_complete(tiny_run):
    cfg, data, records = tiny_run
    assert all(not any(isinstance(v, (dict, list)) for v in r.values()) for r in records)
    starts = [r for r in records if r["study"] == "repelled_start"]
    points = [r for r in records if r["study"] == "repelled_point"]
    assert len(starts) == 2 and len(points) == 2 * 2 * 4 * 3  # seeds × lrs × STEs × eval points
    assert {(r["seed"], r["lr"], r["ste"]) for r in points} == {(s, lr, ste) for s in (0, 1)
                                                                 for lr in (0.2, 1.0) for ste in STES}
    assert sorted({r["step"] for r in points}) == [0, 4, 8]
    keys = {"bits", "alpha", "seed", "ste", "lr", "step", "train_loss", "train_acc", "test_loss", "test_acc",
            "grad_norm", "grad_norm_first", "grad_norm_rest", "distance", "weights_sha256", "diverged"}
    assert all(keys <= set(r) for r in points)
    assert all(r["n_train"] == 240 and r["n_test"] == 90 and r["pretrain_epochs"] == 3 for r in starts)
    for r in points:
        assert math.isclose(r["grad_norm"] ** 2, r["grad_norm_first"] ** 2 + r["grad_norm_rest"] ** 2,
                            rel_tol=1e-9)


def test_every_continuation_starts_from_the_same_weights(tiny_run):
    _, _, records = tiny_run
    for seed in (0, 1):
        start = next(r for r in records if r["study"] == "repelled_start" and r["seed"] == seed)
        at0 = [r for r in records if r["study"] == "repelled_point" and r["seed"] == seed and r["step"] == 0]
        assert len(at0) == 8
        assert {r["weights_sha256"] for r in at0} == {start["weights_sha256"]}
        assert all(r["distance"] == 0.0 for r in at0)
        assert len({(r["train_loss"], r["train_acc"], r["test_acc"], r["grad_norm_rest"]) for r in at0}) == 1
        assert math.isclose(at0[0]["test_acc"], start["test_acc"])
        # the part before σ depends on the STE; after the steps the weights have moved
        assert len({r["grad_norm_first"] for r in at0 if r["lr"] == 0.2}) == 4
        ends = [r for r in records if r["study"] == "repelled_point" and r["seed"] == seed and r["step"] == 8]
        assert all(r["distance"] > 0 and r["weights_sha256"] != start["weights_sha256"] for r in ends)
    a = {r["weights_sha256"] for r in records if r["study"] == "repelled_start"}
    assert len(a) == 2  # the seeds differ


def test_recorded_norm_equals_an_independent_autograd_gradient(tiny_run):
    cfg, data, records = tiny_run
    model = make_model(cfg, 2, 12, 3, torch.Generator().manual_seed(1))  # recompute θ₀ of seed 1
    train(model, data.x_train, data.y_train, TrainConfig(**{**cfg.pretrain, "seed": 1, "stop_at_perfect": False}))
    rec = next(r for r in records if r["study"] == "repelled_point" and r["seed"] == 1 and r["step"] == 0
               and r["ste"] == "log_tailed_relu")
    assert weights_sha256(model) == rec["weights_sha256"]
    model.act.quant = dataclasses.replace(model.act.quant, ste=get_ste("log_tailed_relu"))
    loss = F.cross_entropy(model(data.x_train), data.y_train)  # mean loss, plain autograd
    grads = torch.autograd.grad(loss, list(model.parameters()))
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    first = math.sqrt(sum(float(g.double().pow(2).sum()) for (n, _), g in zip(model.named_parameters(), grads, strict=False)
                          if n.startswith("fc1.")))
    assert math.isclose(rec["grad_norm"], norm, rel_tol=1e-5)
    assert math.isclose(rec["grad_norm_first"], first, rel_tol=1e-5)
    assert math.isclose(rec["train_loss"], float(loss.detach()), rel_tol=1e-5)


@pytest.mark.parametrize("ste", ["identity", "clipped_relu"])
def test_norms_match_the_closed_form_for_the_two_layer_net(gen, ste):
    x = torch.randn(50, 6, generator=gen)
    y = torch.randint(0, 3, (50,), generator=gen)
    model = TwoLayerNet(6, 3, 4, bits=2, ste=ste, second_layer="trained", init_scale=3.0, generator=gen)
    g = coarse_gradient(model, x, y)  # float64 closed form
    got = coarse_gradient_norms(model, x, y, chunk_size=7)
    assert math.isclose(got["grad_norm_first"], float(g["W"].norm()), rel_tol=1e-5)
    assert math.isclose(got["grad_norm_rest"], float(g["V"].norm()), rel_tol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_chunked_autograd_fallback_equals_fast_path(gen):
    x = torch.randn(64, 10, generator=gen)
    y = torch.randint(0, 4, (64,), generator=gen)
    model = MLP(10, 8, 4, bits=4, ste="relu", generator=gen)
    fast = coarse_gradient_norms(model, x, y, chunk_size=9)
    slow = coarse_gradient_norms(model, x.t().contiguous().t(), y, chunk_size=9)  # non-contiguous: autograd
    for key in ("loss", "acc", "grad_norm", "grad_norm_first", "grad_norm_rest"):
        assert math.isclose(fast[key], slow[key], rel_tol=1e-5), key


@pytest.mark.parametrize("kw,field", [
    ({"model": "lenet5"}, "model"), ({"lrs": (0.1, -1.0)}, "lrs"), ({"eval_at": (1, 4)}, "eval_at"),
    ({"eval_at": (0, 99)}, "eval_at"), ({"stes": ("sigmoid",)}, "ste"), ({"bits": (0,)}, "bits"),
    ({"pretrain": {"colour": 1}}, "pretrain"), ({"pretrain": {"lr": -1}}, "lr"), ({"seeds": 0}, "seeds"),
])
def test_bad_config_raises_config_error(kw, field):
    with pytest.raises(ConfigError, match=field):
        _cfg(**kw)


def test_report_and_cli_from_records(tiny_run, tmp_path):
    _, _, records = tiny_run
    md = repelled_report.repelled_markdown(records)
    assert "## Start → end of the continuation" in md and "| 2 | 1 | log_tailed_relu |" in md
    assert "n = 2 seeds (0, 1)" in md
    cells = repelled_report.end_points(records)
    assert len(cells) == 8 and all(c["n"] == 2 for c in cells)
    out = tmp_path / "rep"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(records))
    assert main(["theory", "repelled", "--from-records", "--out", str(out)]) == 0
    assert (out / "repelled.md").read_text() == md
    for png in ("curves.png", "grad_norm_start.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["theory", "repelled", "--lrs", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lrs" in err
    assert not (tmp_path / "x").exists()
