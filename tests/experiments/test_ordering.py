"""The 2019-ordering study on LeNet-5 (``reproduce --only lenet5-ordering``): trials, gaps, table."""

from collections import Counter
from statistics import mean, stdev

import pytest
from small_splits import small_test_split

from coarsegrad.data.datasets import find_dataset
from coarsegrad.experiments import ordering
from coarsegrad.experiments import reproduce as rp

TINY = {"optimizer": "momentum", "lr": 0.1, "batch_size": 50, "epochs": 1}


def _rows(accs):
    """Records from {(setting, ste, seed): acc}."""
    return [{"experiment": ordering.EXPERIMENTS[setting], "ste": ste, "bits": 2, "seed": seed, "test_acc": acc}
            for (setting, ste, seed), acc in accs.items()]


def test_trials_share_one_float_model_per_seed(tmp_path):
    plan = rp.PLANS["full"]["lenet5_ordering"]
    floats = ordering.float_trials(plan, tmp_path, None, "cpu")
    quantized = ordering.quantized_trials(plan, tmp_path, None, "cpu")
    assert len(floats) == 3 and len(quantized) == 2 * 3 * 3
    assert Counter((kw["experiment"], kw["ste"]) for _, kw in quantized) == {
        (ordering.EXPERIMENTS[s], ste): 3 for s in ("scratch", "from_float") for ste in ordering.STES}
    saved = {kw["seed"]: kw["save_to"] for _, kw in floats}
    assert len(set(saved.values())) == 3 and all(kw["train_cfg"] == plan["float_init"] for _, kw in floats)
    for _, kw in quantized:
        setting = "from_float" if kw["experiment"].endswith("from_float") else "scratch"
        assert kw["bits"] == 2 and kw["train_cfg"] == plan[setting] and kw["train_cfg"]["lr"] == 0.1
        assert kw["init_from"] == (saved[kw["seed"]] if kw["experiment"].endswith("from_float") else None)
    # the full lenet5 plan's float init, shortened to the ordering plan's length
    assert plan["float_init"] == {**rp.PLANS["full"]["lenet5"]["float_init"], "epochs": plan["scratch"]["epochs"]}
    assert "lenet5-ordering" in rp.EXPERIMENTS and "lenet5-ordering" not in rp.default_experiments(True)


def test_gaps_spread_and_verdict_against_hand_numbers():
    accs = {("scratch", "identity", 0): 0.980, ("scratch", "relu", 0): 0.990, ("scratch", "clipped_relu", 0): 0.991,
            ("scratch", "identity", 1): 0.982, ("scratch", "relu", 1): 0.992, ("scratch", "clipped_relu", 1): 0.989,
            ("from_float", "identity", 0): 0.990, ("from_float", "relu", 0): 0.991,
            ("from_float", "clipped_relu", 0): 0.985,
            ("from_float", "identity", 1): 0.993, ("from_float", "relu", 1): 0.989,
            ("from_float", "clipped_relu", 1): 0.990}
    rows = _rows(accs)
    assert ordering.seed_gaps(rows, "scratch") == pytest.approx({0: -1.1, 1: -1.0})
    assert ordering.seed_gaps(rows, "from_float") == pytest.approx({0: -0.1, 1: 0.3})
    # spread: the largest std over the two seeds among the STEs (points)
    assert ordering.seed_spread(rows, "scratch") == pytest.approx(
        max(stdev([0.980, 0.982]), stdev([0.990, 0.992]), stdev([0.991, 0.989])) * 100)
    sentence = ordering.verdict(rows)
    assert sentence.count("\n") == 1 and sentence.endswith(".\n")  # one sentence
    assert "from scratch: behind by more than the seed spread (mean gap -1.05" in sentence
    assert "from a float model: not behind by more than the seed spread (mean gap +0.10" in sentence
    table = ordering.ordering_markdown(rows + [{"experiment": "lenet5_ordering_float", "ste": "float", "bits": None,
                                                "seed": 0, "test_acc": 0.99}])
    assert "| identity | 98.10 ± 0.14 (n=2) | 99.15 ± 0.21 (n=2) | 98.49 |" in table
    assert "| relu | 99.10 ± 0.14 (n=2) | 99.00 ± 0.14 (n=2) | 99.24 |" in table
    assert f"| from scratch | seed 0: -1.10, seed 1: -1.00 | -1.05 ± {stdev([-1.1, -1.0]):.2f} |" in table
    assert f"| from a float model | seed 0: -0.10, seed 1: +0.30 | {mean([-0.1, 0.3]):+.2f} ± 0.28 |" in table
    assert "Float baseline (plain ReLU, the from-float starting points, n=1): 99.00 ± 0.00." in table
    rows[0]["diverged_step"] = 7  # scratch, identity, seed 0
    assert "| identity | 98.10 ± 0.14 (n=2, 1 diverged) | 99.15 ± 0.21 (n=2) |" in ordering.ordering_markdown(rows)


def test_verdict_with_one_seed_says_there_is_no_spread():
    rows = _rows({("scratch", ste, 0): acc for ste, acc in zip(ordering.STES, (0.5, 0.6, 0.7), strict=True)})
    assert ordering.seed_spread(rows, "scratch") is None
    assert "from scratch: mean gap -20.00 points, one seed (no spread to compare)" in ordering.verdict(rows)


@pytest.mark.skipif(find_dataset("mnist") is None, reason="MNIST not found (set COARSEGRAD_DATA)")
def test_ordering_smoke(tmp_path, monkeypatch):
    plan = {"seeds": 3, "subset": 100, "bits": 2, "float_init": TINY, "scratch": TINY, "from_float": TINY}
    small_test_split(monkeypatch)
    monkeypatch.setitem(rp.PLANS, "quick", {"lenet5_ordering": plan})
    records = rp.reproduce(out=tmp_path, workers=1, progress=False, seeds=1, only=("lenet5-ordering",),
                           dataset="mnist")
    assert Counter(r["experiment"] for r in records) == {
        "lenet5_ordering_float": 1, "lenet5_ordering_scratch": 3, "lenet5_ordering_from_float": 3}
    assert {r["dataset"] for r in records} == {"mnist"}
    from_float = [r for r in records if r["experiment"] == "lenet5_ordering_from_float"]
    assert all(r["init_from"] and r["init_from"].endswith("lenet5_ordering_seed0.safetensors") for r in from_float)
    table = (tmp_path / "tables.md").read_text()
    assert "## MNIST, LeNet-5, 2 bits: the ICLR 2019 ordering" in table and "| 2 bits (ICLR 2019) |" in table
    assert "one seed (no spread to compare)" in table
    assert ("Setup — from scratch: momentum lr 0.1, constant, 1 epochs, batch 50, weight decay 0.0, "
            "100 training images; from a float model: momentum lr 0.1") in table
