"""``coarsegrad train --act-step lsq|pact`` end to end (synthetic data, an MLP): the learned
step is trained, saved in the checkpoint, loaded back and evaluated; bad flags exit 2."""

import json

import pytest
import torch
from cli_helpers import run_cli

from coarsegrad.io.checkpoint import load_checkpoint

TINY = ["--data", "synthetic", "--num-classes", "3", "--dim", "12", "--subspace-dim", "3",
        "--samples-per-class", "20", "--model", "mlp", "--hidden", "16", "--quiet", "--rounding", "nearest"]


@pytest.mark.parametrize("step,name", [("lsq", "step"), ("pact", "clip")])
def test_train_save_load_eval_with_a_learned_step(tmp_path, capsys, step, name):
    out = tmp_path / step
    code, _, err = run_cli(capsys, "train", *TINY, "--act-step", step, "--steps", 20, "--lr", 0.5, "--out", out)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["act_step"] == step
    model, header = load_checkpoint(out / "model.safetensors")
    assert model.act.quant.learn == step and header["model"]["act_step"] == step
    learned = getattr(model.act, name)
    start = model.act.quant.alpha * (1 if step == "lsq" else model.act.quant.levels)
    assert isinstance(learned, torch.nn.Parameter) and learned.item() != pytest.approx(start, rel=1e-7)  # it moved
    code, stdout, err = run_cli(capsys, "eval", out, "--repeats", 1)
    assert code == 0 and "on synthetic" in stdout, err


def test_learned_step_with_ceil_rounding_exits_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", *TINY[:-2], "--act-step", "pact", "--rounding", "ceil", "--steps", 2,
                           "--out", tmp_path / "x")
    assert code == 2 and "act_step" in err and len(err.strip().splitlines()) == 1
