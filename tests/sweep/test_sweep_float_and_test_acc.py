"""A sweep axis over the activation (quantized vs the float baseline); the summary's test accuracy."""

import json

from coarsegrad.sweep import latest_records, parse_spec, run_sweep, summarize
from coarsegrad.sweep.summary import group_rows, markdown_table


def test_float_is_a_value_of_the_act_axis(tmp_path):
    spec = parse_spec({"base": "synthetic", "seeds": 1, "data": {"samples_per_class": 10}, "train": {"steps": 20},
                       "axes": {"model.act": ["quant", "float"]}})
    out = tmp_path / "sweep"
    result = run_sweep(spec, out, workers=1, progress=False)
    assert (result.ok, result.failed) == (2, 0)
    records = latest_records(out / "trials.jsonl")
    acts = {}
    for record in records.values():
        config = json.loads((out / "trials" / record["id"] / "config.json").read_text())
        acts[record["params"]["act"]] = config["model"]["act"]
    assert acts == {"quant": "quant", "float": "float"}
    table = summarize(out, plots=False).read_text()
    assert "| act |" in table and "| float |" in table and "test acc" not in table  # synthetic: no test split


def test_summary_has_test_accuracy_when_the_data_has_a_test_split():
    def record(seed, test_acc):
        return {"params": {"lr": 0.1}, "status": "ok", "seed": seed,
                "metrics": {"perfect": False, "perfect_step": None, "final_loss": 0.5, "train_acc": 0.9,
                            "test_acc": test_acc, "diverged_step": None}}

    rows = group_rows([record(0, 0.8), record(1, 0.9)], ["lr"])
    table = markdown_table(rows, ["lr"])
    assert "test acc" in table.splitlines()[0] and "0.85 ± 0.0707" in table
