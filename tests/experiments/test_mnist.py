"""The MNIST experiment trials on small subsets (real MNIST; skipped when it is not found)."""

import pytest

from coarsegrad.data.datasets import find_dataset
from coarsegrad.experiments import report
from coarsegrad.experiments.mnist import mnist_trial

pytestmark = pytest.mark.skipif(find_dataset("mnist") is None, reason="MNIST not found (set COARSEGRAD_DATA)")
FAST = {"optimizer": "momentum", "lr": 0.01, "batch_size": 100, "epochs": 2}


def test_two_layer_trial_learns():
    r = mnist_trial("mnist_two_layer", {"model": "two_layer", "units_per_class": 5, "init_scale": 1.0},
                    "clipped_relu", 2, 0, FAST, train_subset=1000)
    assert r["test_acc"] > 0.6 and r["epochs"] == 2 and r["steps"] == 20
    assert r["curve"]["epoch"] == [1, 2] and r["curve"]["test_acc"][-1] == r["test_acc"]
    assert r["config"]["model"]["bits"] == 2 and r["alpha"] == pytest.approx(0.6508, abs=1e-3)


def test_lenet_float_init_then_quantized(tmp_path):
    path = tmp_path / "float.safetensors"
    small = {**FAST, "epochs": 1}
    f = mnist_trial("lenet5_float", {"model": "lenet5"}, "relu", None, 0, small, train_subset=300,
                    save_to=str(path))
    assert f["ste"] == "float" and path.exists()
    q = mnist_trial("lenet5", {"model": "lenet5"}, "clipped_relu", 4, 0, {**small, "lr": 1e-12},
                    train_subset=300, init_from=str(path))
    # a negligible step from the float weights: same weights, quantized activations
    assert q["init_from"] == str(path) and q["bits"] == 4
    assert abs(q["test_acc"] - f["test_acc"]) < 0.3
    table = report.accuracy_table([q], "lenet5", {("clipped_relu", 4): 99.24})
    assert "99.24" in table and "clipped_relu (n=1)" in table
