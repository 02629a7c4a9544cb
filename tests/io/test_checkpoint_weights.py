"""Checkpoints of models with quantized weights: the WeightQuant saved whole, latent weights
and BinaryRelax buffers restored exactly, mismatched configs refused; export refuses them."""

import json

import pytest
import torch

import coarsegrad as cg
from coarsegrad.config import ModelConfig
from coarsegrad.errors import ConfigError, DataError
from coarsegrad.io import tensorfile
from coarsegrad.io.checkpoint import HEADER_KEY, load_checkpoint, save_checkpoint
from coarsegrad.models.build import build_model
from coarsegrad.quant.weight_spec import WeightQuant

CFG = ModelConfig(model="mlp", hidden=8, weight_kind="binary", weight_granularity="channel",
                  weight_method="binaryrelax", weight_hard_after=3.0)


def _trained():
    model = build_model(CFG, 6, 3, seed=0)
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(30, 6, generator=g), torch.randint(0, 3, (30,), generator=g)
    cg.train(model, X, y, cg.TrainConfig(lr=0.5, steps=5, stop_at_perfect=False))
    return model, X


def test_round_trip_keeps_latent_weights_buffers_and_outputs(tmp_path):
    model, X = _trained()
    assert bool(model.fc1.relax_hard)
    header = save_checkpoint(tmp_path / "m.safetensors", model, config=CFG)
    assert header["weight_quant"] == CFG.weight_quant().to_dict()
    loaded, header2 = load_checkpoint(tmp_path / "m.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    model.eval()
    assert torch.equal(loaded(X), model(X))
    assert cg.evaluate(loaded, X, torch.zeros(30, dtype=torch.int64)) == cg.evaluate(
        model, X, torch.zeros(30, dtype=torch.int64))


def test_config_must_describe_the_weights(tmp_path):
    model, _ = _trained()
    with pytest.raises(ConfigError) as info:
        save_checkpoint(tmp_path / "m.safetensors", model, config=ModelConfig(model="mlp", hidden=8))
    assert info.value.field == "config"
    float_model = build_model(ModelConfig(model="mlp", hidden=8), 6, 3, seed=0)
    with pytest.raises(ConfigError):
        save_checkpoint(tmp_path / "f.safetensors", float_model, config=CFG)


def test_header_with_another_weight_spec_is_refused(tmp_path):
    model, _ = _trained()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, config=CFG)
    tensors, meta = tensorfile.load(path)
    header = json.loads(meta[HEADER_KEY])
    header["weight_quant"] = WeightQuant("ternary").to_dict()
    tensorfile.save(path, tensors, {HEADER_KEY: json.dumps(header)})
    with pytest.raises(DataError, match="inconsistent"):
        load_checkpoint(path)


def test_export_refuses_quantized_weights(tmp_path):
    pytest.importorskip("onnx")
    model, _ = _trained()
    lenet = build_model(ModelConfig(model="lenet5", weight_kind="ternary"), 784, 10, seed=0)
    seq = cg.quantize_weights(torch.nn.Sequential(torch.nn.Linear(4, 3), cg.QuantReLU(cg.ActQuant(2))),
                              WeightQuant())
    for export in (lambda: cg.export.to_integer(model), lambda: cg.export.to_onnx(model, tmp_path / "m.onnx"),
                   lambda: cg.export.to_onnx(lenet, tmp_path / "l.onnx"),
                   lambda: cg.export.to_onnx(seq, tmp_path / "s.onnx", input_shape=(4,))):
        with pytest.raises(ConfigError) as info:
            export()
        assert info.value.field == "model" and "quantized weights" in str(info.value)


LSQ_CFG = ModelConfig(model="lenet5", weight_kind="uniform", weight_bits=3, weight_granularity="channel",
                      weight_step="lsq")


def test_learned_weight_steps_round_trip(tmp_path):
    model = build_model(LSQ_CFG, 784, 10, seed=0)
    layers = [m for m in model.modules() if isinstance(m, cg.QuantConv2d | cg.QuantLinear)]
    with torch.no_grad():
        for i, layer in enumerate(layers):
            layer.weight_step.mul_(1.0 + 0.125 * i)  # each its own value, away from s₀
    header = save_checkpoint(tmp_path / "m.safetensors", model, config=LSQ_CFG)
    assert header["weight_quant"]["step"] == "lsq" and header["weight_quant"]["clip"] is None
    assert header["tensors"]["features.0.weight_step"]["shape"] == [layers[0].weight.shape[0], 1, 1, 1]
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loaded(x), model.eval()(x))
    with pytest.raises(ConfigError) as info:  # a config with the statistics step does not describe it
        save_checkpoint(tmp_path / "s.safetensors", model, config=ModelConfig(
            model="lenet5", weight_kind="uniform", weight_bits=3, weight_granularity="channel"))
    assert info.value.field == "config"
