"""The batched synthetic table: records against single runs, the tables, the reproduce hook."""

import json
from pathlib import Path

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


RECORD = Path(__file__).resolve().parents[2] / "results" / "synthetic_table" / "results.json"


def test_the_committed_table_is_reproduced_on_a_subset():
    """Cells of results/synthetic_table/results.json at the quick plan's 2000 steps: every
    path of the quantizer kernels (ceil, count, correct), every STE, both roundings, the
    mirrored (pairs) and plain (iid) data. A run perfect at step t < 2000 in the record
    must be perfect at t here, any other never; a faster trainer that changes a
    trajectory by one rounding flips a code sooner or later and fails this."""
    record = {(r["rounding"], r["ste"], r["bits"], r["data"], r["seed"]): r for r in json.loads(RECORD.read_text())}
    steps = 2000
    cells = [("ceil", "relu", 3), ("ceil", "clipped_relu", 2), ("ceil", "log_tailed_relu", 4), ("ceil", "identity", 2),
             ("nearest", "relu", 1), ("nearest", "clipped_relu", 4), ("nearest", "log_tailed_relu", 2),
             ("nearest", "identity", 3)]
    settings = [{"kind": k, "seed": seed, "units": 20, "rounding": r, "ste": ste, "bits": b}
                for r, ste, b in cells for k in st.KINDS for seed in range(2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the pool workers; tiny matrices thrash over threads on a shared machine
    try:
        records = st.run_grid("synthetic_table", settings, steps, workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    hits = 0
    for s, got in zip(settings, records, strict=True):
        want = record[s["rounding"], s["ste"], s["bits"], s["kind"], s["seed"]]["perfect_step"]
        want = want if want is not None and want < steps else None
        assert got["perfect_step"] == want, s
        hits += want is not None
    assert hits >= len(settings) // 2  # the subset checks steps, not only failures


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
    from coarsegrad.experiments import reproduce as rp
    environment, outputs_then = rp.environment, []

    def spy(device):  # env.json's git commit must describe the tree before any output lands in --out
        outputs_then.append(sorted(p.name for p in tmp_path.iterdir()))
        return environment(device)

    monkeypatch.setattr(rp, "environment", spy)
    records = reproduce(out=tmp_path, only=("synthetic-table",), progress=False, workers=1)
    assert outputs_then == [[]]
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
