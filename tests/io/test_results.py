"""Typed records: exact round trips, old records (no schema_version) still read, bad ones refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coarsegrad.config import DataConfig, ModelConfig
from coarsegrad.errors import DataError
from coarsegrad.io.results import (
    SCHEMA_VERSION,
    MnistTrialRow,
    RunSummary,
    SyntheticTrialRow,
    TrialMetrics,
    TrialRecord,
    read_record,
    read_rows,
    write_record,
    write_rows,
)
from coarsegrad.training.loop import TrainConfig
from coarsegrad.training.run import run_training

SUMMARY = RunSummary(steps=3, final_loss=0.5, train_acc=1.0, perfect_step=2, seconds=0.1,
                     data={"name": "synthetic", "data_seed": 0}, test_loss=None, test_acc=None)


def test_round_trip(tmp_path):
    write_record(tmp_path / "s.json", SUMMARY)
    assert json.loads((tmp_path / "s.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert read_record(tmp_path / "s.json", RunSummary) == SUMMARY


def test_a_record_written_before_schema_version_still_reads(tmp_path):
    old = {k: v for k, v in SUMMARY.to_dict().items()
           if k not in ("schema_version", "status", "diverged_step", "diverged_parameter")}
    (tmp_path / "s.json").write_text(json.dumps(old))
    assert read_record(tmp_path / "s.json", RunSummary) == SUMMARY


@pytest.mark.parametrize("change,match", [
    (lambda d: d.update(schema_version=2), "schema_version"),
    (lambda d: d.update(steps="3"), "'steps'"),
    (lambda d: d.update(steps=True), "'steps'"),
    (lambda d: d.pop("steps"), "'steps' is missing"),
    (lambda d: d.update(data=[1]), "'data'"),
])
def test_bad_records(tmp_path, change, match):
    raw = SUMMARY.to_dict()
    change(raw)
    (tmp_path / "s.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match=match):
        read_record(tmp_path / "s.json", RunSummary)


def test_unreadable_files(tmp_path):
    (tmp_path / "s.json").write_bytes(b"\xff[")
    with pytest.raises(DataError, match="s.json"):
        read_record(tmp_path / "s.json", RunSummary)
    (tmp_path / "s.json").write_text("[1]")
    with pytest.raises(DataError, match="JSON object"):
        read_record(tmp_path / "s.json", RunSummary)


def test_trial_record_nests_metrics_and_stores_non_finite_as_null():
    record = TrialRecord(id="t", params={"bits": 2}, seed=0, config={}, run="r", status="ok",
                         metrics=TrialMetrics(steps=2, final_loss=float("inf"), train_acc=0.5))
    raw = json.loads(json.dumps(record.to_dict()))
    assert raw["metrics"]["final_loss"] is None
    back = TrialRecord.from_dict(raw)
    assert back.metrics == TrialMetrics(steps=2, final_loss=None, train_acc=0.5)
    with pytest.raises(DataError, match="'perfect'"):
        TrialRecord.from_dict({**raw, "metrics": {**raw["metrics"], "perfect": "yes"}})


def test_run_training_writes_and_returns_a_run_summary(tmp_path):
    data = DataConfig(num_classes=2, dim=4, subspace_dim=1, samples_per_class=4)
    summary = run_training(data, ModelConfig(units_per_class=2), TrainConfig(steps=2), tmp_path, progress=False)
    assert isinstance(summary, RunSummary) and summary.status == "completed"
    assert read_record(tmp_path / "summary.json", RunSummary) == summary
    again = run_training(data, ModelConfig(units_per_class=2), TrainConfig(steps=2), tmp_path, progress=False,
                         resume=True)  # a completed run is returned as recorded
    assert again == summary


def test_committed_bench_records_read_as_typed_records():
    from coarsegrad.io.results import EpochBenchRecord

    paths = sorted((Path(__file__).parents[2] / "results" / "bench").glob("cpu*.json"))
    assert paths
    for path in paths:
        record = read_record(path, EpochBenchRecord)
        assert record.schema_version == SCHEMA_VERSION and record.results


def test_unknown_fields_are_refused(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({**SUMMARY.to_dict(), "surprise": 1}))
    with pytest.raises(DataError, match="surprise"):
        read_record(tmp_path / "s.json", RunSummary)


RESULTS = Path(__file__).parents[2] / "results"


@pytest.mark.parametrize("name,types", [
    ("quick", {SyntheticTrialRow, MnistTrialRow}), ("synthetic", {SyntheticTrialRow}),
    ("mnist_two_layer", {MnistTrialRow}), ("lenet5", {MnistTrialRow})])
def test_committed_reproduce_rows_read_as_typed_rows(name, types):
    path = RESULTS / name / "results.json"
    raw = json.loads(path.read_text())
    rows = read_rows(path)
    assert {type(r) for r in rows} == types and len(rows) == len(raw)
    for row, old in zip(rows, raw, strict=True):  # rows written before schema_version read as version 1; every key kept
        assert row.schema_version == old.get("schema_version", 1) == 1
        expected = {k: v for k, v in old.items() if k != "schema_version"}
        if "rounding" not in old["config"]["model"]:  # written before the field: read as the ceil they ran
            expected["config"] = {**old["config"], "model": {**old["config"]["model"], "rounding": "ceil"}}
        assert {k: v for k, v in row.to_dict().items() if k != "schema_version"} == expected


def _tiny_synthetic_row():
    from coarsegrad.experiments.synthetic import synthetic_trial

    data = {"num_classes": 2, "dim": 4, "subspace_dim": 1, "samples_per_class": 4}
    return synthetic_trial(data, {"units_per_class": 2}, {"steps": 3}, "clipped_relu", 2, 0)


def test_fresh_synthetic_row_round_trips(tmp_path):
    raw = _tiny_synthetic_row()
    assert raw["schema_version"] == SCHEMA_VERSION and raw["steps"] <= 3 and raw["curve"]["step"]
    write_rows(tmp_path / "results.json", [raw, SyntheticTrialRow.from_dict(raw)])
    back = read_rows(tmp_path / "results.json", SyntheticTrialRow)
    assert [r.to_dict() for r in back] == [raw, raw]


def test_rows_and_trial_records_without_rounding_read_as_ceil(tmp_path):
    """Rows and sweep results written before the rounding field ran ceil and read so; new ones carry it."""
    raw = _tiny_synthetic_row()
    assert raw["config"]["model"]["rounding"] == "nearest"  # new rows always write it (the default)
    old = json.loads(json.dumps(raw))
    del old["config"]["model"]["rounding"]
    (tmp_path / "results.json").write_text(json.dumps([old, raw]))
    back = read_rows(tmp_path / "results.json")
    assert [r.config["model"]["rounding"] for r in back] == ["ceil", "nearest"]
    assert back[0].to_dict() == {**raw, "config": {**raw["config"], "model": {**raw["config"]["model"], "rounding": "ceil"}}}
    trial = {"id": "a", "params": {}, "seed": 0, "config": {"data": {}, "model": {}, "train": {}}, "run": "x"}
    assert TrialRecord.from_dict(trial).config["model"] == {"rounding": "ceil"}
    trial["config"]["model"] = {"rounding": "floor", "bits": 1}
    assert TrialRecord.from_dict(trial).config["model"] == {"rounding": "floor", "bits": 1}


@pytest.mark.parametrize("change,match", [
    (lambda d: d.update(surprise=1), "surprise"),
    (lambda d: d.update(schema_version=2), "schema_version"),
    (lambda d: d.pop("perfect"), "'perfect' is missing"),
    (lambda d: d.update(seed="0"), "'seed'"),
    (lambda d: d.update(experiment="nope"), "unknown experiment"),
])
def test_bad_rows_name_the_file_and_row(tmp_path, change, match):
    raw = _tiny_synthetic_row()
    change(raw)
    (tmp_path / "results.json").write_text(json.dumps([_tiny_synthetic_row(), raw]))
    with pytest.raises(DataError, match=match) as err:
        read_rows(tmp_path / "results.json")
    assert err.value.field == f"{tmp_path / 'results.json'} row 1"
    with pytest.raises(DataError, match=match):  # nor is such a row written
        write_rows(tmp_path / "again.json", [raw])
    assert not (tmp_path / "again.json").exists()


def test_results_file_that_is_not_a_list_of_rows(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(DataError, match="JSON list") as err:
        read_rows(tmp_path / "results.json")
    assert err.value.field == str(tmp_path / "results.json")
    (tmp_path / "results.json").write_text("[")
    with pytest.raises(DataError, match="results.json"):
        read_rows(tmp_path / "results.json")
