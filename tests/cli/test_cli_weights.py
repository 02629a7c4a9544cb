"""``coarsegrad train`` with quantized weights, end to end on synthetic data with an MLP:
train, save, load, evaluate; bad weight flags are one line and exit 2."""

import json

import torch
from cli_helpers import run_cli

from coarsegrad.config import ModelConfig
from coarsegrad.io.checkpoint import load_checkpoint
from coarsegrad.models.build import build_model
from coarsegrad.quant.qlayers import QuantLinear
from coarsegrad.quant.weight_spec import WeightQuant

TINY = ["--data", "synthetic", "--num-classes", "3", "--dim", "12", "--subspace-dim", "3",
        "--samples-per-class", "20", "--model", "mlp", "--hidden", "16", "--quiet"]


def test_train_save_load_eval_with_binary_bcgd_weights(tmp_path, capsys):
    out = tmp_path / "w"
    code, _, err = run_cli(capsys, "train", *TINY, "--weight-bits", 1,  # 1 bit alone: binary
                           "--weight-method", "bcgd", "--weight-granularity", "channel", "--weight-rho", 0.01,
                           "--steps", 20, "--lr", 0.5, "--out", out)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["weight_kind"] == "binary" and config["model"]["weight_method"] == "bcgd"
    model, _ = load_checkpoint(out / "model.safetensors")
    assert isinstance(model.fc1, QuantLinear) and model.fc1.weight_quant == WeightQuant(
        "binary", 1, "channel", "bcgd", rho=0.01)
    w = model.fc1.quantized_weight()
    assert torch.equal(w.abs(), w.abs().amax(1, keepdim=True).expand_as(w))  # ±α per output channel
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["train_acc"] is not None
    code, stdout, err = run_cli(capsys, "eval", out, "--repeats", 1)
    assert code == 0 and "on synthetic" in stdout, err
    for argv in (("export", out), ("eval", out, "--engine", "int")):  # synthetic data: no pixels, no integer-only form
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "quantized weights" in err and len(err.strip().splitlines()) == 1


def test_bad_weight_flags_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", *TINY, "--weight-bits", 9, "--steps", 2, "--out", tmp_path / "x")
    assert code == 2 and "weight_bits" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "train", *TINY, "--weight-kind", "binary", "--model", "two_layer",
                           "--steps", 2, "--out", tmp_path / "y")
    assert code == 2 and "weight_kind" in err


def test_train_save_load_eval_with_lsq_weights(tmp_path, capsys):
    out = tmp_path / "lsq"
    code, _, err = run_cli(capsys, "train", *TINY, "--weight-kind", "uniform", "--weight-bits", 4,
                           "--weight-step", "lsq", "--weight-granularity", "channel", "--steps", 20, "--lr", 0.2,
                           "--out", out)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["weight_step"] == "lsq"
    model, _ = load_checkpoint(out / "model.safetensors")
    assert model.fc1.weight_quant == WeightQuant("uniform", 4, "channel", step="lsq")
    start = build_model(ModelConfig(**config["model"]), 12, 3, config["train"]["seed"] + 1)  # the run's s₀
    assert model.fc1.weight_step.shape == (16, 1) and not torch.equal(model.fc1.weight_step, start.fc1.weight_step)
    codes, scales = model.fc1.codes_and_scales()
    assert torch.equal(scales, model.fc1.weight_step.detach()) and int(codes.abs().max()) <= 7
    code, stdout, err = run_cli(capsys, "eval", out, "--repeats", 1)
    assert code == 0 and "on synthetic" in stdout, err
    code, _, err = run_cli(capsys, "train", *TINY, "--weight-kind", "binary", "--weight-step", "lsq", "--steps", 2,
                           "--out", tmp_path / "x")
    assert code == 2 and "weight_step" in err and len(err.strip().splitlines()) == 1
