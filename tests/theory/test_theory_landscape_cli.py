"""Landscape runner, report-from-records and the ``coarsegrad theory`` CLI."""

import json
import math

import pytest

from coarsegrad import ConfigError
from coarsegrad.cli.main import main
from coarsegrad.theory import report
from coarsegrad.theory.landscape import heatmap_grid, make_trials, run_trial, run_trials, success_rates


def _tiny(**kw):
    return make_trials([4], [3.0], [4], ["clipped_relu"], [0, 1], steps=60, samples_per_class=20, **kw)


def test_make_trials_grid_and_validation():
    trials = make_trials([2, 4], [0.1, 1.0, 10.0], [2, 4], ["relu", "identity"], range(3))
    assert len(trials) == 2 * 3 * 2 * 2 * 3
    assert len({tuple(sorted(t.items())) for t in trials}) == len(trials)
    with pytest.raises(ConfigError, match="colour"):
        make_trials([2], [1.0], [2], ["relu"], [0], colour="red")


def test_run_trial_is_deterministic_and_pool_matches_serial():
    trials = _tiny()
    serial = run_trials(trials, workers=1)
    assert [run_trial(t)["final_loss"] for t in trials] == [r["final_loss"] for r in serial]
    pooled = run_trials(trials, workers=2)
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [drop(r) for r in pooled] == [drop(r) for r in serial]
    with pytest.raises(ConfigError, match="workers"):
        run_trials(trials, workers=0)


def test_success_rates_and_heatmap_from_hand_made_records():
    recs = [{"bits": 2, "ste": "relu", "units_per_class": u, "lr": lr, "seed": s,
             "success": ok, "perfect_step": 10 * (s + 1) if ok else None, "diverged": False}
            for u, lr, s, ok in [(4, 1.0, 0, True), (4, 1.0, 1, False), (8, 1.0, 0, True),
                                 (8, 1.0, 1, True), (4, 3.0, 0, False)]]
    rates = {(r["units_per_class"], r["lr"]): r for r in success_rates(recs)}
    assert rates[(4, 1.0)]["rate"] == 0.5 and rates[(4, 1.0)]["median_perfect_step"] == 10
    assert rates[(8, 1.0)]["rate"] == 1.0 and rates[(8, 1.0)]["median_perfect_step"] == 20
    units, lrs, grid = heatmap_grid(success_rates(recs))[(2, "relu")]
    assert units == [4, 8] and lrs == [1.0, 3.0]
    assert grid[0] == [0.5, 0.0] and grid[1][0] == 1.0 and math.isnan(grid[1][1])


def _flat(records):
    return all(isinstance(r, dict) and not any(isinstance(v, (dict, list)) for v in r.values())
               for r in records)


def test_cli_angles_quick_writes_records_tables_and_plot(tmp_path, capsys):
    out = tmp_path / "angles"
    assert main(["theory", "angles", "--quick", "--bits", "1", "2", "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())  # strict JSON (no NaN)
    assert isinstance(records, list) and _flat(records)
    studies = {r["study"] for r in records}
    assert studies == {"angle_grid", "spurious", "sign_sweep", "trajectory"}
    assert {r["bits"] for r in records} == {1, 2}
    md = (out / "angles.md").read_text()
    assert "cosine(E[g_μ], ∂f/∂w) versus θ" in md and "log_tailed_relu b=2" in md
    assert md == report.angles_markdown(records)  # the table is made from the records only
    (out / "angles.md").unlink()
    assert main(["theory", "angles", "--from-records", "--out", str(out)]) == 0
    assert (out / "angles.md").read_text() == md
    assert (out / "cosine_vs_theta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["command"].startswith("coarsegrad theory angles --quick")
    assert "torch" in json.loads((out / "env.json").read_text())


def test_cli_geometry_and_landscape_quick(tmp_path):
    assert main(["theory", "geometry", "--quick", "--seeds", "1", "--steps", "30",
                 "--out", str(tmp_path / "g")]) == 0
    recs = json.loads((tmp_path / "g" / "results.json").read_text())
    assert _flat(recs) and {r["study"] for r in recs} == {"geometry_run", "geometry_trace"}
    assert "condition reached" in (tmp_path / "g" / "geometry.md").read_text()
    assert main(["theory", "landscape", "--quick", "--workers", "1", "--seeds", "1", "--steps", "20",
                 "--out", str(tmp_path / "l")]) == 0
    recs = json.loads((tmp_path / "l" / "results.json").read_text())
    assert len(recs) == 2 and _flat(recs)
    assert (tmp_path / "l" / "success_rate.png").exists()


@pytest.mark.parametrize("argv,field", [
    (["theory", "angles", "--quick", "--bits", "0"], "bits"),
    (["theory", "angles", "--quick", "--stes", "sigmoid"], "ste"),
    (["theory", "landscape", "--quick", "--workers", "0"], "workers"),
    (["theory", "geometry", "--quick", "--seeds", "0"], "seeds"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, field):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and field in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_cli_from_records_needs_results(tmp_path, capsys):
    assert main(["theory", "geometry", "--from-records", "--out", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err


def test_cli_unknown_study_is_a_usage_error(capsys):
    assert main(["theory", "sideways"]) == 2
    assert "invalid choice" in capsys.readouterr().err
