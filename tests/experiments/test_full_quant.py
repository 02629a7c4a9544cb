"""The fully quantized grid (``reproduce --only full-quant``): settings, table, quick run end to end."""

import dataclasses
import json
import math
from collections import Counter
from statistics import mean, stdev

import pytest
from small_splits import small_test_split

from coarsegrad.cli.main import main
from coarsegrad.config import ModelConfig, load_preset
from coarsegrad.data.datasets import find_dataset
from coarsegrad.errors import DataError
from coarsegrad.experiments import full_quant as fq
from coarsegrad.experiments import mnist
from coarsegrad.experiments import reproduce as rp
from coarsegrad.export.qmodel import deployed_size
from coarsegrad.io.checkpoint import load_checkpoint
from coarsegrad.io.results import FullQuantRow, read_rows
from coarsegrad.quant.qlayers import QuantLinear
from coarsegrad.training.loop import evaluate

MNIST = pytest.mark.skipif(find_dataset("mnist") is None, reason="MNIST not found (set COARSEGRAD_DATA)")
WEIGHT_LSQ = "weight_step" in {f.name for f in dataclasses.fields(ModelConfig)}


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of ``coarsegrad ARGV`` in this process (tests/cli/cli_helpers.py's helper)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _kind(s):
    """Which part of the brief's grid a setting is."""
    if s.act is None:
        return "float network"
    if s.weights is None:
        return f"float weights, {s.step}"
    return f"{s.step} weights"


def test_full_grid_sizes_and_parts():
    mlp, lenet = fq.settings("mlp"), fq.settings("lenet5")
    # MLP: 3 weights × 2 acts × 3 methods + learned {2,4} × {2,4} + float weights {2,4} × {fixed, learned} + float
    assert Counter(map(_kind, mlp)) == {"fixed weights": 18, "learned weights": 4, "float weights, fixed": 2,
                                        "float weights, learned": 2, "float network": 1}
    # LeNet-5: 3 × 3 at act 2 + act 4 ste {1,2,4} + learned act 2 {2,4} + float weights act {2,4} + float
    assert Counter(map(_kind, lenet)) == {"fixed weights": 12, "learned weights": 2, "float weights, fixed": 2,
                                          "float network": 1}
    assert {(s.weights, s.method) for s in lenet if s.act == 4 and s.weights} == {(1, "ste"), (2, "ste"), (4, "ste")}
    assert all(s.act == 2 and s.weights in (2, 4) and s.method == "ste" for s in lenet if s.step == "learned"
               and s.weights)
    for grid in (mlp, lenet):
        assert len({s.name for s in grid}) == len(grid) == len(set(grid))
    plan = fq.PLANS["full"]
    trials = fq.trials(plan, rp.Path("out"), None, "cpu")
    assert len(trials) == (27 + 17) * 3 and [kw["setting"]["model"] for _, kw in trials][:81] == ["mlp"] * 81
    assert len({kw["save_to"] for _, kw in trials}) == len(trials)
    assert plan["train"]["mlp"]["lr"] == load_preset("images")["train"]["lr"] and plan["train"]["mlp"]["epochs"] == 3
    assert "full-quant" in rp.EXPERIMENTS and "full-quant" not in rp.default_experiments(True)


def test_fixed_settings_build_the_specs_they_name():
    total = 1000
    for s in fq.settings("mlp") + fq.settings("lenet5"):
        if s.step == "learned" and s.weights is not None:
            continue  # weight LSQ: below
        cfg = ModelConfig(**s.model_fields(), ste=fq.STE, bits=s.act or 2)
        assert cfg.rounding == "nearest" and cfg.act_step == ("lsq" if s.step == "learned" else "fixed")
        spec = cfg.weight_quant()
        if s.weights is None:
            assert spec is None
            continue
        assert (spec.kind, spec.bits) == {1: ("binary", 1), 2: ("ternary", 2), 4: ("uniform", 4)}[s.weights]
        assert spec.granularity == "channel" and spec.method == s.method and spec.step == "stat"
        assert spec.rho == (1e-3 if s.method == "bcgd" else 1e-5)
        assert spec.hard_step(total) == (math.ceil(0.5 * total) if s.method == "binaryrelax" else None)


@pytest.mark.skipif(not WEIGHT_LSQ, reason="weight LSQ (ModelConfig.weight_step, branch lsq) not merged")
def test_learned_settings_use_lsq_uniform_weights():
    for s in fq.settings("mlp") + fq.settings("lenet5"):
        if s.step == "learned" and s.weights is not None:
            spec = ModelConfig(**s.model_fields(), ste=fq.STE, bits=s.act).weight_quant()
            assert (spec.kind, spec.bits, spec.step, spec.method) == ("uniform", s.weights, "lsq", "ste")


def _row(weights, method, step, act, seed, acc, model="mlp", dataset="mnist"):
    spec = None if weights is None else {"bits": weights}
    return {"experiment": "full_quant", "model": model, "dataset": dataset, "bits": act, "seed": seed,
            "test_acc": acc, "weight_quant": spec, "method": method, "step": step}


def test_grid_table_from_hand_numbers():
    rows = [_row(1, "bcgd", "fixed", 2, 0, 0.90), _row(1, "bcgd", "fixed", 2, 1, 0.92),
            _row(1, "bcgd", "fixed", 4, 0, 0.95), _row(1, "ste", "fixed", 2, 0, 0.91),
            _row(2, "ste", "learned", 2, 0, 0.97), _row(None, None, "fixed", 4, 0, 0.96),
            _row(None, None, "fixed", None, 0, 0.98), _row(None, None, "fixed", None, 1, 0.99),
            _row(4, "ste", "fixed", 2, 0, 0.5, dataset="fashion-mnist"), _row(4, "ste", "fixed", 2, 0, 0.5, "lenet5")]
    table = fq.grid_markdown(rows, "mlp", "mnist", {"seeds": lambda group: str(len(group))})
    lines = table.splitlines()
    assert lines[0] == "| weights | method | step | act 2 bits | act 4 bits | seeds |"
    assert lines[2:6] == [
        "| 1 bit (binary) | ste | fixed | 91.00 ± 0.00 (n=1) | – | 1 |",
        f"| 1 bit (binary) | bcgd | fixed | {mean([90, 92]):.2f} ± {stdev([90, 92]):.2f} (n=2) | 95.00 ± 0.00 (n=1) | 3 |",
        "| float | – | fixed | – | 96.00 ± 0.00 (n=1) | 1 |",
        "| 2 bits (uniform) | ste | learned | 97.00 ± 0.00 (n=1) | – | 1 |"]
    assert f"Float network (float weights, plain ReLU, n=2): 98.50 ± {stdev([98, 99]):.2f}." in table
    assert "50.00" not in table  # other dataset, other model
    assert "| 4 bits (uniform) | ste | fixed | 50.00 ± 0.00 (n=1) |" in fq.grid_markdown(rows, "lenet5", "mnist")


@MNIST
def test_quick_plan_end_to_end(tmp_path, monkeypatch, capsys):
    small_test_split(monkeypatch)
    small = mnist.prepare_dataset("mnist")  # the cut test split the trials see
    monkeypatch.setitem(fq.PLANS, "quick", {**fq.PLANS["quick"], "subset": {"mlp": 300}})
    out = tmp_path / "fq"
    code, text, _ = run_cli(capsys, "reproduce", "--quick", "--only", "full-quant", "--out", out, "--workers", 1,
                            "--quiet")
    assert code == 0
    rows = read_rows(out / "results.json")
    assert len(rows) == len(fq.settings("mlp", "quick")) == 12 and {type(r) for r in rows} == {FullQuantRow}
    assert "## MNIST, MLP 784-128-10, fully quantized" in text and (out / "tables.md").read_text() in text + "\n"
    assert "| 2 bits (ternary) | binaryrelax | fixed |" in text and "Float network" in text
    assert json.loads((out / "env.json").read_text())["experiments"] == ["full-quant"]
    x_test, y_test = small.x_test, small.y_test
    for row in rows:
        assert row.train_subset == 300 and row.dataset == "mnist" and row.model == "mlp"
        # the saved final model gives the record's test accuracy again (same 100 test images)
        assert evaluate(fq.load_trial_model(row.to_dict()), x_test, y_test)[1] == row.test_acc
        if row.bits is None:
            continue
        model, header = load_checkpoint(row.model_file)  # the saved final model, rebuilt from its header
        assert header["weight_quant"] == row.weight_quant and header["quant"]["bits"] == row.bits
        assert isinstance(model.fc1, QuantLinear) == (row.weight_quant is not None)
        assert (row.act_step == "lsq") == (row.step == "learned")
    # deployment: one row per quantized-weight setting (seed 0), sizes those of the saved model
    deploy = fq.read_deployment(out / fq.DEPLOY_FILE)
    quantized = [r for r in rows if r.weight_quant is not None]
    assert len(deploy) == len(quantized) == 9
    for d, row in zip(deploy, quantized, strict=True):
        assert (d["packed_bytes"], d["float32_bytes"]) == deployed_size(fq.load_trial_model(row.to_dict()))
        assert d["packed_bytes"] < d["float32_bytes"] / 5 and d["engine_ips"] > 0 and d["torch_ips"] > 0
        assert f"| {d['packed_bytes'] / 1024:.0f} / {d['float32_bytes'] / 1024:.0f} |" in text


def test_deployment_file_is_validated(tmp_path):
    path = tmp_path / fq.DEPLOY_FILE
    assert fq.read_deployment(path) == []
    good = {"model": "mlp", "dataset": "mnist", "weights": "1 bit (binary)", "method": "ste", "step": "fixed",
            "act": 2, "packed_bytes": 10, "float32_bytes": 100, "engine_ips": 5.0, "torch_ips": 7}
    path.write_text(json.dumps([good]))
    assert fq.read_deployment(path) == [good]
    for bad in ("{", json.dumps({"a": 1}), json.dumps([{**good, "act": "2"}]), json.dumps([{**good, "extra": 1}]),
                json.dumps([{**good, "packed_bytes": True}]), json.dumps([{k: v for k, v in good.items() if k != "step"}])):
        path.write_text(bad)
        with pytest.raises(DataError) as info:
            fq.read_deployment(path)
        assert info.value.field == str(path)


@MNIST
def test_fullquant_preset_trains_on_mnist(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--config", "fullquant", "--data", "mnist", "--steps", 3,
                           "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    model, header = load_checkpoint(tmp_path / "run" / "model.safetensors")
    spec = model.fc1.weight_quant
    assert (spec.kind, spec.bits, spec.method, spec.granularity, spec.rho) == ("ternary", 2, "bcgd", "channel", 1e-3)
    assert header["bits"] == 2
