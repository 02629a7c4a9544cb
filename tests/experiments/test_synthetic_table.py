"""The batched synthetic table: records against single runs, the tables, the reproduce hook."""

import json

import pytest
import torch

from coarsegrad.config import DataConfig, ModelConfig
from coarsegrad.experiments import synthetic_table as st
from coarsegrad.experiments.reproduce import reproduce
from coarsegrad.models.build import build_model
from coarsegrad.training.run import build_data


def test_problem_is_the_single_run_problem():
    """Data from seed, weights from seed + 1: what `coarsegrad train` builds for that config."""
    X, y, W = st._problem("iid", 3, 20)
    data = DataConfig(synthetic_kind="iid")
    run = build_data(data, 3)
    assert torch.equal(X, run.x_train) and torch.equal(y, run.y_train)
    net = build_model(ModelConfig(units_per_class=20, init_scale=0.1), 40, 4, 4)
    assert torch.equal(W, net.W.detach())


def test_a_record_does_not_depend_on_its_batch_companions():
    """The same setting alone, in one process, and inside a larger grid over two processes.

    (Equality with single `train` runs is tested in float64 in tests/training/test_batched.py;
    in float32 both programs round differently, a pre-activation near a threshold can
    flip a code, and the staircase dynamics then drift apart, so steps-to-perfect of
    the float32 table match `coarsegrad train` in distribution, not run by run.)"""
    one = {"kind": "pairs", "seed": 0, "units": 20, "rounding": "ceil", "ste": "relu", "bits": 3}
    (alone,) = st.run_grid("synthetic_table", [one], 300, workers=1, progress=False)
    others = [dict(one, seed=s, ste=ste, rounding=r) for s in (0, 1) for ste in ("relu", "identity")
              for r in ("ceil", "nearest")]
    grid = st.run_grid("synthetic_table", others, 300, workers=2, progress=False)
    (inside,) = [r for r in grid if (r["seed"], r["ste"], r["rounding"]) == (0, "relu", "ceil")]
    assert alone == dict(inside, batch_seconds=alone["batch_seconds"], batch_runs=1)
    assert [(r["seed"], r["ste"], r["rounding"]) for r in grid] == [(s["seed"], s["ste"], s["rounding"]) for s in others]


def fake(rounding, ste, bits, seed, perfect_step, acc, kind="pairs", units=20, experiment="synthetic_table"):
    return {"experiment": experiment, "data": kind, "rounding": rounding, "ste": ste, "bits": bits, "seed": seed,
            "perfect": perfect_step is not None, "perfect_step": perfect_step, "train_acc": acc, "max_steps": 100,
            "units_per_class": units}


def test_table_cells():
    records = [fake("nearest", "relu", 1, s, p, a) for s, (p, a) in enumerate([(10, 1.0), (30, 1.0), (None, 0.75)])]
    text = st.table_markdown(records)
    assert "| nearest | relu | 2/3 (median step 20); failures end at 75.0% |" in text
    assert "Data `pairs`" in text


def test_units_table_finds_the_smallest_m():
    records = [fake("ceil", "relu", 2, s, None if (m == 2 and s == 0) or m == 1 else 5, 1.0, units=m,
                    experiment="synthetic_units") for m in (1, 2, 3) for s in range(2)]
    text = st.units_markdown(records)
    assert "| ceil | relu | 3 |" in text and "| ceil | relu | 0/2 1/2 2/2 |" in text
    bad = [dict(r, perfect=False) for r in records]
    assert "| ceil | relu | >3 |" in st.units_markdown(bad)


def test_reproduce_writes_the_table(tmp_path, monkeypatch):
    monkeypatch.setitem(st.PLANS, "quick", {"steps": 5, "seeds": 1})
    monkeypatch.setattr(st, "STES", ("relu",))
    monkeypatch.setattr(st, "BITS", (1, 2))
    records = reproduce(out=tmp_path, only=("synthetic-table",), progress=False, workers=1)
    assert len(records) == 2 * 2 * 2  # rounding × bits × data
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == records or len(saved) == len(records)
    assert {r["rounding"] for r in saved} == {"ceil", "nearest"} and {r["data"] for r in saved} == {"pairs", "iid"}
    assert "Synthetic table" in (tmp_path / "tables.md").read_text()
    assert json.loads((tmp_path / "env.json").read_text())["experiments"] == ["synthetic-table"]


def test_unknown_experiment_is_refused(tmp_path):
    from coarsegrad.errors import ConfigError
    with pytest.raises(ConfigError):
        reproduce(out=tmp_path, only=("synthetic_tables",), progress=False)


def test_reproduce_writes_the_units_table(tmp_path, monkeypatch):
    monkeypatch.setitem(st.PLANS, "quick", {"steps": 3, "seeds": 1})
    monkeypatch.setattr(st, "UNITS", (1, 2))
    monkeypatch.setattr(st, "MONOTONE", ("clipped_relu",))
    monkeypatch.setattr(st, "BITS", (2,))
    records = reproduce(out=tmp_path, only=("synthetic-units",), progress=False, workers=2)
    assert sorted((r["units_per_class"], r["rounding"]) for r in records) == [
        (1, "ceil"), (1, "nearest"), (2, "ceil"), (2, "nearest")]
    assert {r["data"] for r in records} == {"pairs"}
    assert "Smallest units per class" in (tmp_path / "tables.md").read_text()
