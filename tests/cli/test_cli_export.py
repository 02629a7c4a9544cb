"""``coarsegrad export`` and ``coarsegrad eval``, in-process: results agree, bad input exits 2 without a traceback."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from cli_helpers import run_cli

from coarsegrad.cli.main import main

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--model", "mlp", "--hidden", "24", "--batchnorm", "--num-classes", "3", "--dim", "12",
                 "--subspace-dim", "3", "--samples-per-class", "40", "--bits", "2", "--steps", "60",
                 "--lr", "0.5", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def _eval(capsys, *argv):
    code, out, err = run_cli(capsys, "eval", *argv, "--json", "--repeats", "1")
    assert code == 0, err
    return json.loads(out)


def test_export_and_eval_agree_across_engines(run_dir, capsys, tmp_path):
    ref = _eval(capsys, run_dir, "--data", "synthetic")
    assert ref["engine"] == "torch" and ref["samples"] == 120
    matrix = np.array(ref["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == 120 and np.trace(matrix) == ref["correct"]
    assert ref["samples_per_s"] > 0
    for fmt, suffix in (("onnx", "model.onnx"), ("int", "model.int.safetensors")):
        code, out, _ = run_cli(capsys, "export", run_dir, "--format", fmt)
        assert code == 0 and suffix in out
        got = _eval(capsys, run_dir / suffix, "--data", "synthetic")
        assert got["confusion_matrix"] == ref["confusion_matrix"], fmt
    code, out, _ = run_cli(capsys, "export", run_dir, "--format", "onnx", "--int8", "--out", tmp_path / "q.onnx")
    assert code == 0 and "int8" in out
    q_onnx = _eval(capsys, tmp_path / "q.onnx", "--data", "synthetic")
    code, _, _ = run_cli(capsys, "export", run_dir, "--format", "int", "--int8", "--out", tmp_path / "q.int")
    q_int = _eval(capsys, tmp_path / "q.int", "--data", "synthetic")
    assert q_onnx["confusion_matrix"] == q_int["confusion_matrix"]  # same integer arithmetic
    assert abs(q_int["accuracy"] - ref["accuracy"]) <= 0.05
    on_the_fly = _eval(capsys, run_dir, "--data", "synthetic", "--engine", "onnx-int8")
    assert on_the_fly["confusion_matrix"] == q_onnx["confusion_matrix"]


def test_eval_prints_a_table(run_dir, capsys):
    code, out, _ = run_cli(capsys, "eval", run_dir, "--data", "synthetic", "--repeats", "1")
    assert code == 0 and "accuracy" in out and "samples/s" in out and "confusion matrix" in out


@pytest.mark.parametrize("argv,match", [
    (["eval", "{tmp}/absent", "--data", "synthetic"], "no such file"),
    (["eval", "{tmp}", "--data", "synthetic"], "not a run directory"),
    (["eval", "{tmp}/garbage.safetensors", "--data", "synthetic"], "header length"),
    (["eval", "{tmp}/garbage.onnx", "--data", "synthetic"], "ONNX"),
    (["eval", "{run}", "--data", "cifar"], "unknown data"),
    (["eval", "{run}", "--data", "mnist"], "features|not found"),
    (["eval", "{run}", "--data", "synthetic", "--repeats", "0"], "repeats"),
    (["eval", "{run}/model.onnx", "--engine", "int8"], "PyTorch model"),
    (["export", "{tmp}/absent", "--format", "onnx"], "no such file"),
    (["export", "{tmp}/garbage.safetensors", "--format", "int"], "header length"),
    (["export", "{run}/model.onnx", "--format", "int"], "already exported"),
    (["export", "{run}", "--format", "tflite"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, capsys, tmp_path, argv, match):
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 64)
    (tmp_path / "garbage.onnx").write_bytes(b"\x00not onnx")
    if not (run_dir / "model.onnx").exists():
        assert main(["export", str(run_dir), "--format", "onnx"]) == 0
        capsys.readouterr()
    argv = [a.format(tmp=tmp_path, run=run_dir) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and re.search(match, err) and len(err.strip().splitlines()) == 1, err
