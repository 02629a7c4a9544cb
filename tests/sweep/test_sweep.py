"""Sweeps: spec parsing, the trials.jsonl store, a local sweep end to end, summaries, CLI errors."""

import json
import multiprocessing
import os

import pytest

from coarsegrad.cli.main import main
from coarsegrad.errors import ConfigError
from coarsegrad.sweep import latest_records, parse_spec, read_records, run_sweep, summarize
from coarsegrad.sweep.store import append_record

TINY = {
    "base": "synthetic", "seeds": 2,
    "data": {"samples_per_class": 20}, "train": {"steps": 60},
    "axes": {"lr": [0.5, -1.0], "model.ste": ["relu", "identity"]},
}


def test_spec_axes_ranges_ids_and_seeds():
    spec = parse_spec({"base": "synthetic", "seeds": [3, 7], "train": {"epochs": 5},
                       "axes": {"train.lr": {"log_start": -2, "log_stop": 0, "num": 3},
                                "init_scale": {"start": 0.1, "stop": 0.3, "num": 3}, "bits": [1, 2]}})
    assert [a.values for a in spec.axes] == [(0.01, 0.1, 1.0), (0.1, 0.2, 0.3), (1, 2)]
    assert [(a.section, a.field) for a in spec.axes] == [("train", "lr"), ("model", "init_scale"), ("model", "bits")]
    trials = spec.trials()
    assert len(trials) == 3 * 3 * 2 * 2 and len({t.id for t in trials}) == len(trials)
    first = trials[0]
    assert first.id == "lr-0.01_init_scale-0.1_bits-1_seed-3" and first.seed == 3
    assert first.config["train"] == {"optimizer": "sgd", "lr": 0.01, "epochs": 5, "stop_at_perfect": True,
                                     "log_every": 10, "seed": 3}  # inline epochs replaced the preset's steps
    assert first.config["model"]["units_per_class"] == 20 and first.config["data"]["dim"] == 40
    assert [t.seed for t in trials[:4]] == [3, 7, 3, 7]  # seeds innermost
    assert parse_spec({"axes": {"steps": [5]}, "seeds": 2}).seeds == [0, 1]


@pytest.mark.parametrize("spec,field", [
    ({"axes": {"nope": [1]}}, "axes.nope"),
    ({"axes": {"model.lr": [1]}}, "axes.model.lr"),
    ({"axes": {"seed": [1, 2]}}, "axes.seed"),
    ({"axes": {"lr": []}}, "axes.lr"),
    ({"axes": {"lr": {"log_start": 0, "num": 3}}}, "axes.lr"),
    ({"axes": {"lr": {"start": 0, "stop": 1, "num": 0}}}, "axes.lr"),
    ({"axes": {"lr": [[1]]}}, "axes.lr"),
    ({"axes": {"lr": [0.1000001, 0.1000002]}}, "axes"),
    ({"seeds": 0}, "seeds"), ({"seeds": [1, 1]}, "seeds"), ({"seeds": [-1]}, "seeds"),
    ({"sweep": {}}, "spec"), ({"train": {"lrr": 1}}, "train.lrr"), ({"base": "no-such-preset"}, "config"),
    ({"checkpoint_every": -1}, "checkpoint_every"),
])
def test_bad_specs_name_the_field(spec, field):
    with pytest.raises(ConfigError) as info:
        parse_spec(spec).trials()
    assert info.value.field == field


def _append_many(path, worker, count):
    for i in range(count):
        append_record(path, {"id": f"{worker}-{i}", "pad": "x" * (i * 97 % 3000)})


def test_store_skips_torn_lines_and_survives_concurrent_writers(tmp_path):
    path = tmp_path / "trials.jsonl"
    append_record(path, {"id": "a", "status": "failed"})
    with open(path, "ab") as handle:
        handle.write(b'{"id": "b", "stat')  # a writer killed mid-line
    assert [r["id"] for r in read_records(path)] == ["a"]
    append_record(path, {"id": "a", "status": "ok"})  # seals the fragment onto its own line
    assert latest_records(path) == {"a": {"id": "a", "status": "ok"}}
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and sum(1 for line in lines if line.startswith(b'{"id": "b"')) == 1
    assert len(read_records(path)) == 2 + 4 * 40


def test_local_sweep_records_failures_resumes_and_summarizes(tmp_path):
    out = tmp_path / "sweep"
    spec = parse_spec(TINY)
    result = run_sweep(spec, out, workers=2, progress=False)
    assert (result.total, result.ok, result.failed, result.skipped) == (8, 4, 4, 0)
    records = latest_records(out / "trials.jsonl")
    assert len(records) == 8 and len(read_records(out / "trials.jsonl")) == 8
    bad = records["lr--1_ste-relu_seed-0"]
    assert bad["status"] == "failed" and bad["error"].startswith("ConfigError: lr:") and bad["attempts"] == 1
    good = records["lr-0.5_ste-identity_seed-1"]
    assert good["status"] == "ok" and good["seed"] == 1 and good["params"] == {"lr": 0.5, "ste": "identity"}
    assert good["metrics"]["steps"] >= 1 and 0 <= good["metrics"]["train_acc"] <= 1 and good["host"]
    run = out / "trials" / good["id"]
    assert json.loads((run / "summary.json").read_text())["train_acc"] == good["metrics"]["train_acc"]
    assert json.loads((run / "worker.json").read_text())["pid"] == good["pid"] != os.getpid()
    # the same command again: only the 4 failed trials run (and fail again)
    again = run_sweep(spec, out, workers=2, progress=False)
    assert (again.ok, again.failed, again.skipped) == (0, 4, 4)
    assert len(read_records(out / "trials.jsonl")) == 12
    # the spec changed under the same ids: refuse to mix results
    changed = parse_spec({**TINY, "train": {"steps": 61}})
    with pytest.raises(ConfigError, match="another config"):
        run_sweep(changed, out, progress=False)
    table = summarize(out).read_text()
    assert "| lr | ste | n | success |" in table and "| 0.5 | identity | 2 |" in table
    assert "| -1.0 | relu | 0 | – |" in table
    assert (out / "plots" / "lr.png").stat().st_size > 1000 and (out / "plots" / "ste.png").is_file()


def test_sweep_cli(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('base = "synthetic"\nseeds = 1\n[data]\nsamples_per_class = 10\n[train]\nsteps = 5\n'
                    '[axes]\nbits = [1, 2]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert "2 trials: 2 ok, 0 failed" in stdout and (out / "summary.md").is_file()
    assert main(["sweep", "--summarize", str(out)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[axes]\nlr = [0.1\n")
    for argv, needle in [([str(bad)], "spec"), ([str(tmp_path / "none.toml")], "spec"), ([], "spec"),
                         (["--summarize", str(tmp_path / "none")], "summarize"),
                         ([str(spec), "--summarize", str(out)], "summarize"),
                         ([str(spec), "--workers", "0"], "workers"), ([str(spec), "--ray-address", "x:1"], "ray_address"),
                         ([str(spec), "--max-retries", "-1"], "max_retries"), ([str(spec), "--backend", "dask"], "backend")]:
        assert main(["sweep", *argv, "--out", str(tmp_path / "o2")]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (argv, err)


def test_results_of_a_sweep_from_before_the_rounding_field_are_ceil(tmp_path):
    """Every trial config records its rounding; an old result (none recorded) ran ceil, so re-running
    its spec into its folder is refused under the nearest default and resumes under rounding = "ceil"."""
    from coarsegrad.sweep.runner import pending_trials

    old_spec = {"seeds": 1, "model": {"bits": 1}, "train": {"steps": 5}, "axes": {"ste": ["relu"]}}
    spec = parse_spec(old_spec)
    trial = spec.trials()[0]
    assert trial.config["model"]["rounding"] == "nearest"
    old_config = json.loads(json.dumps(trial.config))
    del old_config["model"]["rounding"]
    append_record(tmp_path / "trials.jsonl", {"id": trial.id, "params": trial.params, "seed": trial.seed,
                                              "config": old_config, "run": "x", "status": "ok"})
    with pytest.raises(ConfigError, match="another config"):
        pending_trials(spec, tmp_path)
    assert pending_trials(parse_spec({**old_spec, "model": {"bits": 1, "rounding": "ceil"}}), tmp_path) == ([], 1)
    axis = parse_spec({**old_spec, "axes": {"rounding": ["ceil", "nearest"]}}).trials()
    assert [t.config["model"]["rounding"] for t in axis] == ["ceil", "nearest"]
