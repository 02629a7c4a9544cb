"""``coarsegrad eval`` and ``export`` of a LeNet-5 run (synthetic 784-feature data stands in for images)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import coarsegrad as cg
from coarsegrad.cli.main import main
from coarsegrad.export.artifacts import load_eval_data


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "lenet"
    code = main(["train", "--model", "lenet5", "--num-classes", "3", "--dim", "784", "--subspace-dim", "3",
                 "--samples-per-class", "10", "--bits", "2", "--steps", "2", "--batch-size", "16",
                 "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_eval_of_a_lenet5_run_matches_the_loaded_model(run_dir, capsys):
    code, out, err = run_cli(capsys, "eval", run_dir, "--data", "synthetic", "--json", "--repeats", "1")
    assert code == 0, err
    result = json.loads(out)
    model, config = cg.load_run(run_dir)
    x, y, _ = load_eval_data({"run_config": config}, "synthetic")
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    assert result["engine"] == "torch" and result["samples"] == len(y) == 30
    assert result["correct"] == int((pred == y).sum())
    assert np.array_equal(np.array(result["confusion_matrix"]).sum(axis=0), np.bincount(pred, minlength=3))
