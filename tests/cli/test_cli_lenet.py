"""``coarsegrad eval`` and ``export`` of a LeNet-5 run (synthetic 784-feature data stands in for images)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

import coarsegrad as cg
from coarsegrad.cli.main import main
from coarsegrad.export.artifacts import load_eval_data


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


def test_export_onnx_of_a_lenet5_run_agrees_with_torch(run_dir, capsys, tmp_path):
    out = tmp_path / "lenet.onnx"
    code, stdout, err = run_cli(capsys, "export", run_dir, "--format", "onnx", "--out", out)
    assert code == 0, err
    assert "lenet5" in stdout and out.is_file()
    ref = run_cli(capsys, "eval", run_dir, "--data", "synthetic", "--json", "--repeats", "1")
    got = run_cli(capsys, "eval", out, "--data", "synthetic", "--json", "--repeats", "1")
    assert ref[0] == got[0] == 0, got[2]
    ref_r, got_r = json.loads(ref[1]), json.loads(got[1])
    assert got_r["engine"] == "onnx" and got_r["confusion_matrix"] == ref_r["confusion_matrix"]


@pytest.mark.parametrize("argv", [("--format", "int"), ("--format", "onnx", "--int8")])
def test_integer_export_of_lenet5_is_refused_in_one_line(run_dir, capsys, argv):
    code, out, err = run_cli(capsys, "export", run_dir, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "two-layer models" in err


def test_eval_engine_onnx_converts_a_lenet5_run_in_process(run_dir, capsys):
    ref = run_cli(capsys, "eval", run_dir, "--data", "synthetic", "--json", "--repeats", "1")
    got = run_cli(capsys, "eval", run_dir, "--data", "synthetic", "--engine", "onnx", "--json", "--repeats", "1")
    assert ref[0] == got[0] == 0, got[2]
    ref_r, got_r = json.loads(ref[1]), json.loads(got[1])
    assert got_r["engine"] == "onnx" and got_r["confusion_matrix"] == ref_r["confusion_matrix"]
