"""``coarsegrad export``/``eval`` of MNIST runs with quantized weights (MLP, LeNet-5): the
integer-only packed file and ONNX agree with the PyTorch run; bad files are one line, exit 2."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from cli_helpers import run_cli

from coarsegrad.config import ModelConfig
from coarsegrad.data.datasets import find_dataset
from coarsegrad.io.checkpoint import save_checkpoint
from coarsegrad.models.networks import MLP, LeNet5
from coarsegrad.quant.qlayers import quantize_weights

pytest.importorskip("onnxruntime")


def _tiny(model: str):
    """A small fully quantized model with batch-norm statistics, and its ModelConfig."""
    g = torch.Generator().manual_seed(0)
    if model == "lenet5":
        cfg = ModelConfig(model="lenet5", weight_kind="ternary")
        net = LeNet5(channels=(2, 3), hidden=8, generator=g)
    else:
        cfg = ModelConfig(model="mlp", hidden=16, batchnorm=True, weight_kind="uniform", weight_bits=4,
                          weight_granularity="channel")
        net = MLP(784, 16, 10, batchnorm=True, generator=g)
    net = quantize_weights(net, cfg.weight_quant())
    net.train()
    with torch.no_grad():
        net(torch.randn(256, 784, generator=g))
    return net.eval(), cfg


@pytest.fixture(scope="module", params=["lenet5", "mlp"])
def run_dir(request, tmp_path_factory):
    """A checkpoint like a ``coarsegrad train`` run's on MNIST (tiny, untrained: fast to evaluate).
    The LeNet-5 file records no normalisation (as a run's model.safetensors): it is read from the data."""
    if find_dataset("mnist") is None:
        pytest.skip("MNIST not found (set COARSEGRAD_DATA)")
    net, cfg = _tiny(request.param)
    path = tmp_path_factory.mktemp("cli") / f"{request.param}.safetensors"
    norm = None if request.param == "lenet5" else (0.1307, 0.3081)
    save_checkpoint(path, net, config={"model": dataclasses.asdict(cfg), "data": {"data": "mnist"}}, normalization=norm)
    return path


def _eval(capsys, path, *extra):
    code, out, err = run_cli(capsys, "eval", path, "--json", "--repeats", "1", *extra)
    assert code == 0, err
    return json.loads(out)


def test_export_int_and_onnx_agree_with_the_run(run_dir, capsys, tmp_path):
    ref = _eval(capsys, run_dir)
    for fmt, name in (("int", "m.qint.safetensors"), ("onnx", "m.qint.onnx")):
        code, stdout, err = run_cli(capsys, "export", run_dir, "--format", fmt, "--out", tmp_path / name)
        assert code == 0, err
        assert "integer-only" in stdout and "vs float32" in stdout and "smaller" in stdout
        got = _eval(capsys, tmp_path / name)
        assert got["engine"] == ("integer" if fmt == "int" else "onnx")
        assert got["confusion_matrix"] == ref["confusion_matrix"] and got["samples"] == 10000
        assert got["deployed_size"]["packed_bytes"] < got["deployed_size"]["float32_bytes"]
    converted = _eval(capsys, run_dir, "--engine", "int")
    assert converted["confusion_matrix"] == ref["confusion_matrix"]


def test_bad_files_and_flags_exit_2(run_dir, capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", run_dir, "--format", "int", "--int8")
    assert code == 2 and "int8" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "eval", run_dir, "--engine", "onnx-int8")
    assert code == 2 and len(err.strip().splitlines()) == 1
    path = tmp_path / "m.qint.safetensors"
    assert run_cli(capsys, "export", run_dir, "--format", "int", "--out", path)[0] == 0
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x10
    path.write_bytes(bytes(blob))
    code, _, err = run_cli(capsys, "eval", path)
    assert code == 2 and "digest" in err and len(err.strip().splitlines()) == 1
