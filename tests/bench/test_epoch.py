"""`coarsegrad bench`: structure of the record and the table (tiny sizes, no timing asserts)."""

import json

import numpy as np
import pytest

from coarsegrad.bench.epoch import BenchConfig, flops_per_row, run_bench
from coarsegrad.bench.report import format_table
from coarsegrad.cli.main import main
from coarsegrad.errors import ConfigError

TINY = BenchConfig(hidden=(8, 16), samples=200, batch_size=64, repeats=1, sgemm_size=32, data="random",
                   brevitas=False)


def test_flops_per_row_matches_the_stated_count():
    assert flops_per_row(784, 512, 10) == 3196 * 512


def test_run_bench_record_structure():
    record = run_bench(TINY)
    assert [r["hidden"] for r in record["results"]] == [8, 16]
    for r in record["results"]:
        assert {"ours", "ours_autograd", "float_relu", "autograd_ste", "detach_ste",
                "full_batch_step"} <= set(r["variants"])
        assert all(v["median_s"] > 0 and len(v["times_s"]) == 1 for v in r["variants"].values())
        assert r["ratios"]["ours/float_relu"] > 0 and 0 < r["data_path_share"]
        assert r["skipped"] == {}  # brevitas=False: not attempted
        assert r["data_path_over_copy"] == pytest.approx(r["data_path_s"] / record["dataset_copy_s"])
    assert record["dataset_copy_s"] > 0
    goals = {g["goal"]: g for g in record["goals"]}
    assert "quantized epoch / float-ReLU epoch" in goals
    assert all(isinstance(g["met"], bool) for g in goals.values())
    table = format_table(record)
    assert "plain PyTorch, float ReLU" in table and ("met" in table)
    assert "one plain copy of X" in table


def test_paired_ratio_is_the_median_of_per_round_ratios():
    from coarsegrad.bench.epoch import paired_ratio

    # per-round ratios 1, 2, 1 give 1; the ratio of the medians (4 / 2) would give 2
    assert paired_ratio([1.0, 4.0, 9.0], [1.0, 2.0, 9.0]) == 1.0
    assert paired_ratio([2.0, 6.0], [1.0, 2.0]) == 2.5


def test_cli_bench_writes_json_and_markdown(tmp_path, capsys):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    code = main(["bench", "--quick", "--hidden", "8", "--samples", "200", "--repeats", "1",
                 "--data", "random", "--no-brevitas", "--json", str(out), "--markdown", str(md)])
    assert code == 0
    assert "| goal | target |" in md.read_text() and "Command:" in md.read_text()
    record = json.loads(out.read_text())
    assert record["machine"]["cpu_count"] >= 1 and "environment" in record["machine"]
    assert record["config"]["hidden"] == [8] and record["results"][0]["hidden"] == 8
    assert "goal" in capsys.readouterr().out


def test_bench_config_is_validated():
    with pytest.raises(ConfigError, match="^hidden"):
        BenchConfig(hidden=())
    with pytest.raises(ConfigError, match="^data"):
        BenchConfig(data="cifar")


def test_brevitas_statistics_phase_epochs_lie_inside_its_first_300_steps():
    from coarsegrad.bench.epoch import statistics_phase_epochs

    warm = [10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # 59 steps per epoch: epochs 0-4 end by step 295 <= 300; epoch 0 is left out
    assert statistics_phase_epochs(warm, 59) == [1.0, 2.0, 3.0, 4.0]
    assert statistics_phase_epochs(warm, 100) == [1.0, 2.0]  # epochs 0-2 end at step 300
    assert statistics_phase_epochs(warm, 200) == [10.0]  # only epoch 0 starts inside it


def test_brevitas_variant_when_installed():
    pytest.importorskip("brevitas")
    from dataclasses import replace

    record = run_bench(replace(TINY, hidden=(8,), brevitas=True))
    r = record["results"][0]
    steps = 4  # ⌈200 / 64⌉
    warm = r["variants"]["brevitas"]["warmup_s"]
    assert len(warm) == -(-300 // steps) + 1  # timed only after its 300 statistics steps
    assert r["variants"]["brevitas"]["statistics_phase_s"] == pytest.approx(float(np.median(warm[1:300 // steps])))
    assert "Brevitas, inside its statistics phase" in format_table(record)
