"""`coarsegrad bench --inference RUN_DIR` on a tiny trained MNIST run (structure only, no timing asserts)."""

import json

import pytest

from coarsegrad.cli.main import main
from coarsegrad.data.datasets import find_dataset

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif(find_dataset("mnist") is None, reason="MNIST not found (set COARSEGRAD_DATA)")


def test_bench_inference_on_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "mnist", "--model", "mlp", "--hidden", "16", "--bits", "2",
                 "--optimizer", "adam", "--lr", "0.01", "--batch-size", "1000", "--steps", "5",
                 "--out", str(run), "--quiet"]) == 0
    out = tmp_path / "inf.json"
    assert main(["bench", "--inference", str(run), "--repeats", "1", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    row = record["runs"][0]
    assert row["hidden"] == 16 and row["samples"] == 10000
    assert row["onnx_fp32"]["pred_agree_with_torch_fp32"] == 10000  # exact export
    assert "int8/fp32=" in capsys.readouterr().out


def test_bench_inference_missing_run(tmp_path, capsys):
    assert main(["bench", "--inference", str(tmp_path / "nope")]) == 2
    assert "Traceback" not in capsys.readouterr().err
