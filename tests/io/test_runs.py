"""cg.load_run: every model of a ``coarsegrad train`` run directory, back in Python."""

from __future__ import annotations

import json

import pytest
import torch

import coarsegrad as cg
from coarsegrad.config import DataConfig, ModelConfig
from coarsegrad.errors import DataError
from coarsegrad.io import tensorfile
from coarsegrad.models.networks import MLP, LeNet5, TwoLayerNet
from coarsegrad.training.loop import TrainConfig
from coarsegrad.training.run import run_training

# synthetic data with 784 features stands in for 28×28 images (LeNet-5 needs them)
DATA = DataConfig(num_classes=3, dim=784, subspace_dim=3, samples_per_class=8, data_seed=1)
MODELS = [(ModelConfig(model="two_layer", units_per_class=2), TwoLayerNet),
          (ModelConfig(model="mlp", hidden=6, batchnorm=True, bits=3), MLP),
          (ModelConfig(model="lenet5", bits=2, ste="relu"), LeNet5)]


@pytest.mark.parametrize(("cfg", "cls"), MODELS, ids=lambda v: getattr(v, "model", ""))
def test_load_run_rebuilds_the_trained_model(cfg, cls, tmp_path):
    out = tmp_path / "run"
    run_training(DATA, cfg, TrainConfig(steps=2, batch_size=8, seed=4), out, progress=False)
    model, config = cg.load_run(out)
    assert type(model) is cls and not model.training
    assert config == json.loads((out / "config.json").read_text()) and config["model"]["model"] == cfg.model
    saved, _ = tensorfile.load(out / "model.safetensors")
    state = model.state_dict()
    assert sorted(saved) == sorted(state) and all(torch.equal(saved[k], state[k]) for k in saved)
    specs = {m.quant for m in model.modules() if isinstance(m, cg.QuantReLU)}
    assert specs == {cfg.act_quant()}
    # a checkpoint re-saved from it round-trips exactly (LeNet-5 sizes read from the tensors)
    cg.save_checkpoint(tmp_path / "c.safetensors", model, config=config)
    again, _ = cg.load_checkpoint(tmp_path / "c.safetensors")
    x = torch.randn(5, 784, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x), again(x))


def test_load_run_refuses_incomplete_or_inconsistent_runs(tmp_path):
    out = tmp_path / "run"
    run_training(DATA, MODELS[2][0], TrainConfig(steps=1, batch_size=8), out, progress=False)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "model": {**config["model"], "bits": 3}}))
    with pytest.raises(DataError, match="differs"):
        cg.load_run(out)
    (out / "config.json").unlink()
    with pytest.raises(DataError, match="config.json is missing"):
        cg.load_run(out)
    with pytest.raises(DataError, match="model.safetensors is missing"):
        cg.load_run(tmp_path)


def test_a_run_written_before_the_rounding_field_loads_as_ceil(tmp_path):
    """config.json and the model file's config without ``rounding`` (older runs): ceil, as they ran."""
    from coarsegrad.training.run import load_run_config

    out = tmp_path / "run"
    cfg = ModelConfig(model="two_layer", units_per_class=2, bits=1, rounding="ceil")
    run_training(DATA, cfg, TrainConfig(steps=2, batch_size=8, seed=4), out, progress=False)
    trained, _ = cg.load_run(out)
    config = json.loads((out / "config.json").read_text())
    assert config["model"].pop("rounding") == "ceil"  # new runs always write it
    (out / "config.json").write_text(json.dumps(config))
    tensors, _ = tensorfile.load(out / "model.safetensors")
    tensorfile.save(out / "model.safetensors", tensors, {"config": json.dumps(config, sort_keys=True)})
    model, loaded = cg.load_run(out)
    assert loaded["model"]["rounding"] == "ceil" and model.act.quant == trained.act.quant == cfg.act_quant()
    assert load_run_config(out)[1].act_quant() == cfg.act_quant()  # what --resume reads
    x = torch.randn(5, 784, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x), trained(x))
