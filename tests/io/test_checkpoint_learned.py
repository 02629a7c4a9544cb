"""Checkpoints of library models with a learned activation step (ModelConfig.act_step)."""

import pytest
import torch

import coarsegrad as cg
from coarsegrad.config import ModelConfig
from coarsegrad.errors import ConfigError
from coarsegrad.io.checkpoint import load_checkpoint, save_checkpoint
from coarsegrad.models.build import build_model


@pytest.mark.parametrize("model_name,step,inputs", [("mlp", "lsq", 6), ("lenet5", "pact", 784)])
def test_learned_step_round_trips_exactly(tmp_path, model_name, step, inputs):
    cfg = ModelConfig(model=model_name, hidden=8, rounding="nearest", act_step=step)
    model = build_model(cfg, inputs, 3, seed=0)
    acts = [m for m in model.modules() if isinstance(m, cg.QuantReLU)]
    with torch.no_grad():
        for i, act in enumerate(acts):
            (act.step if step == "lsq" else act.clip).fill_(0.5 + 0.25 * i)  # each layer its own value
    header = save_checkpoint(tmp_path / "m.safetensors", model, config=cfg)
    assert header["quant"]["learn"] == step
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    x = torch.randn(5, inputs, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(x), model.eval()(x))


def test_config_without_the_learned_step_does_not_describe_the_model(tmp_path):
    model = build_model(ModelConfig(model="mlp", hidden=8, rounding="nearest", act_step="lsq"), 6, 3, seed=0)
    with pytest.raises(ConfigError, match="config"):
        save_checkpoint(tmp_path / "m.safetensors", model, config=ModelConfig(model="mlp", hidden=8, rounding="nearest"))
    with pytest.raises(ConfigError, match="act_step"):
        ModelConfig(act_step="lsq", rounding="ceil")
    with pytest.raises(ConfigError, match="act_step"):
        ModelConfig(act_step="dorefa", rounding="nearest")
