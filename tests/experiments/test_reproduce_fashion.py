"""``coarsegrad reproduce --dataset``: Fashion-MNIST in the two-layer and LeNet-5 experiments.

Records and headings say the dataset, the ICLR 2019 columns appear only for MNIST, every table
has its float row. The smoke run uses real Fashion-MNIST (skipped when it is not installed).
"""

import json
from collections import Counter

import pytest
from small_splits import small_test_split

from coarsegrad.data.datasets import find_dataset
from coarsegrad.errors import ConfigError
from coarsegrad.experiments import reproduce as rp
from coarsegrad.io.results import read_rows

TINY = {"optimizer": "momentum", "lr": 0.05, "batch_size": 50, "epochs": 1}
TINY_PLAN = {"two_layer": {"seeds": 3, "subset": 100, "train": TINY},
             "lenet5": {"seeds": 3, "subset": 100, "float_init": None, "train": TINY}}


def test_record_names_say_the_dataset():
    assert [rp.record_name(x, "mnist") for x in ("mnist_two_layer", "lenet5", "lenet5_float")] == [
        "mnist_two_layer", "lenet5", "lenet5_float"]  # the committed records' names
    assert [rp.record_name(x, "fashion-mnist") for x in ("mnist_two_layer", "lenet5", "lenet5_float")] == [
        "fashion_mnist_two_layer", "fashion_mnist_lenet5", "fashion_mnist_lenet5_float"]


def test_full_fashion_plan_is_the_asked_one(tmp_path):
    full = rp.PLANS["full"]
    lenet = rp.plan_for(full, "lenet5", "fashion-mnist")
    assert lenet["float_init"] is None and lenet["seeds"] == 3 and lenet["subset"] is None
    assert lenet["train"] == {"optimizer": "momentum", "lr": 0.05, "batch_size": 128, "epochs": 2,
                              "schedule": "cosine", "weight_decay": 5e-4}
    assert rp.plan_for(full, "lenet5", "mnist") is full["lenet5"]  # MNIST keeps its plan
    assert rp.plan_for(full, "two_layer", "fashion-mnist") is full["two_layer"]
    quantized = rp.lenet_trials(full, tmp_path, None, "cpu", dataset="fashion-mnist")
    floats = rp.lenet_trials(full, tmp_path, None, "cpu", float_init=True, dataset="fashion-mnist")
    assert len(quantized) == 4 * 3 * 3 and {kw["bits"] for _, kw in quantized} == {1, 2, 4}
    assert all(kw["init_from"] is None and kw["dataset"] == "fashion-mnist" for _, kw in quantized)
    # the float row: 3 seeds trained like the quantized runs, not saved (nothing starts from them)
    assert [kw["seed"] for _, kw in floats] == [0, 1, 2]
    assert all(kw["save_to"] is None and kw["train_cfg"] == lenet["train"] and kw["bits"] is None
               and kw["experiment"] == "fashion_mnist_lenet5_float" for _, kw in floats)
    mnist_floats = rp.lenet_trials(full, tmp_path, None, "cpu", float_init=True)
    assert all(kw["save_to"] and kw["train_cfg"] == full["lenet5"]["float_init"] for _, kw in mnist_floats)
    assert {kw["bits"] for _, kw in rp.lenet_trials(full, tmp_path, None, "cpu")} == {2, 4}


def _row(experiment, dataset, ste, bits, seed, acc):
    return {"experiment": experiment, "dataset": dataset, "ste": ste if bits else "float", "bits": bits,
            "seed": seed, "test_acc": acc, "curve": None}


def test_report_headings_and_iclr_columns_per_dataset(tmp_path):
    rows = []
    for dataset in ("mnist", "fashion-mnist"):
        for exp in ("mnist_two_layer", "lenet5"):
            rows += [_row(rp.record_name(exp, dataset), dataset, "relu", 2, 0, 0.9),
                     _row(rp.record_name(exp, dataset), dataset, "identity", 2, 0, 0.8)]
        rows.append(_row(rp.record_name("mnist_two_layer", dataset), dataset, "float", None, 0, 0.95))
        rows.append(_row(rp.record_name("lenet5_float", dataset), dataset, "float", None, 0, 0.97))
    env = {"platform": "x", "cpu_count": 2, "device": "cpu", "torch": "t"}
    text = rp.write_report(rows, tmp_path, env, "quick")
    sections = {s.split("\n", 1)[0]: s for s in text.split("## ")[1:]}
    assert set(sections) == {
        "MNIST, two-linear-layer network: test accuracy % (mean ± std over seeds)",
        "MNIST, LeNet-5: test accuracy % (mean ± std over seeds)",
        "Fashion-MNIST, two-linear-layer network: test accuracy % (mean ± std over seeds)",
        "Fashion-MNIST, LeNet-5: test accuracy % (mean ± std over seeds)"}
    for title, section in sections.items():
        assert ("ICLR 2019" in section) == (title == "MNIST, LeNet-5: test accuracy % (mean ± std over seeds)")
        float_acc = "97.00" if "LeNet" in title else "95.00"
        assert f"Float baseline (plain ReLU, n=1): {float_acc} ± 0.00." in section
    assert "98.49" in sections["MNIST, LeNet-5: test accuracy % (mean ± std over seeds)"]


def test_bad_dataset_and_missing_dataset(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError) as err:
        rp.reproduce(out=tmp_path, only=("lenet5",), dataset="cifar10", progress=False)
    assert err.value.field == "dataset"
    monkeypatch.setattr(rp, "find_dataset", lambda name, data_dir=None: None)
    assert rp.reproduce(out=tmp_path, only=("mnist_two_layer", "lenet5"), dataset="fashion-mnist",
                        progress=False) == []
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reproduce:")]
    assert len(err_lines) == 1 and "skipping mnist_two_layer, lenet5: fashion-mnist not found" in err_lines[0]


@pytest.mark.skipif(find_dataset("fashion-mnist") is None,
                    reason="Fashion-MNIST not installed (/usr/share/datasets/fashion-mnist)")
def test_fashion_smoke_records_and_tables(tmp_path, monkeypatch):
    small_test_split(monkeypatch)
    monkeypatch.setitem(rp.PLANS, "quick", TINY_PLAN)
    records = rp.reproduce(out=tmp_path, workers=1, progress=False, seeds=1, only=("mnist_two_layer", "lenet5"),
                           dataset="fashion-mnist")
    assert Counter(r["experiment"] for r in records) == {
        "fashion_mnist_two_layer": 4 * 3 + 1, "fashion_mnist_lenet5": 4 * 3, "fashion_mnist_lenet5_float": 1}
    assert {r["dataset"] for r in records} == {"fashion-mnist"}
    assert {r["config"]["data"]["data"] for r in records} == {"fashion-mnist"}
    assert {r["bits"] for r in records if r["experiment"] == "fashion_mnist_lenet5"} == {1, 2, 4}
    assert all(r["train_subset"] == 100 for r in records)
    assert len(read_rows(tmp_path / "results.json")) == len(records)  # typed rows: the new names are known
    assert json.loads((tmp_path / "env.json").read_text())["dataset"] == "fashion-mnist"
    table = (tmp_path / "tables.md").read_text()
    assert "## Fashion-MNIST, two-linear-layer network" in table and "## Fashion-MNIST, LeNet-5" in table
    assert "## MNIST" not in table and "ICLR 2019" not in table
    assert table.count("Float baseline (plain ReLU, n=1)") == 2
    assert (tmp_path / "fashion_mnist_lenet5_curves.png").is_file()
