"""ModelConfig's weight_* fields → WeightQuant (ConfigError naming the weight_* field);
build_model quantizes every Linear and Conv2d of an mlp or lenet5; two_layer refuses."""

import pytest
import torch
from torch import nn

from coarsegrad.config import ModelConfig
from coarsegrad.errors import ConfigError
from coarsegrad.models.build import build_model
from coarsegrad.quant.qlayers import QuantConv2d, QuantLinear, quantize_weights, weight_spec_of
from coarsegrad.quant.weight_spec import WeightQuant


def test_weight_fields_make_the_spec():
    assert ModelConfig().weight_quant() is None
    cfg = ModelConfig(model="mlp", weight_kind="binary", weight_bits=1, weight_method="bcgd",
                      weight_granularity="channel", weight_rho=0.01)
    assert cfg.weight_quant() == WeightQuant("binary", 1, "channel", "bcgd", rho=0.01)
    relax = ModelConfig(weight_kind="uniform", weight_bits=4, weight_method="binaryrelax", weight_hard_after=100.0)
    assert relax.weight_quant().hard_after == 100 and type(relax.weight_quant().hard_after) is int  # a step
    assert ModelConfig(weight_kind="ternary", weight_hard_after=0.25).weight_quant().hard_after == 0.25  # a fraction
    lsq = ModelConfig(weight_kind="uniform", weight_bits=4, weight_granularity="channel", weight_step="lsq")
    assert lsq.weight_quant() == WeightQuant("uniform", 4, "channel", step="lsq", clip=None)


@pytest.mark.parametrize("field,kwargs", [
    ("weight_kind", {"weight_kind": "int4"}), ("weight_bits", {"weight_bits": 9}),
    ("weight_bits", {"weight_bits": 0}),
    ("weight_bits", {"weight_kind": "uniform"}), ("weight_bits", {"weight_kind": "binary", "weight_bits": 2}),
    ("weight_method", {"weight_kind": "binary", "weight_method": "adam"}),
    ("weight_granularity", {"weight_kind": "binary", "weight_granularity": "row"}),
    ("weight_rho", {"weight_kind": "binary", "weight_rho": 2.0}),
    ("weight_lam_growth", {"weight_kind": "binary", "weight_lam_growth": 0.5}),
    ("weight_hard_after", {"weight_kind": "binary", "weight_hard_after": 1.5}),
    ("weight_clip", {"weight_kind": "binary", "weight_clip": -1.0}),
    ("weight_step", {"weight_step": "lsq"}), ("weight_step", {"weight_step": "pact"}),
    ("weight_step", {"weight_kind": "ternary", "weight_step": "lsq"}),
    ("weight_step", {"weight_kind": "uniform", "weight_bits": 4, "weight_method": "bcgd", "weight_step": "lsq"}),
    ("weight_clip", {"weight_kind": "uniform", "weight_bits": 4, "weight_clip": 0.5, "weight_step": "lsq"}),
])
def test_bad_weight_fields_name_the_field(field, kwargs):
    with pytest.raises(ConfigError) as info:
        ModelConfig(**kwargs)
    assert info.value.field == field


def test_build_model_quantizes_every_layer():
    spec = WeightQuant("uniform", 4, "channel", "bcgd")
    mlp = build_model(ModelConfig(model="mlp", hidden=8, weight_kind="uniform", weight_bits=4,
                                  weight_granularity="channel", weight_method="bcgd"), 6, 3, seed=1)
    float_mlp = build_model(ModelConfig(model="mlp", hidden=8), 6, 3, seed=1)
    assert type(mlp.fc1) is QuantLinear and type(mlp.fc2) is QuantLinear and weight_spec_of(mlp) == spec
    assert torch.equal(mlp.fc1.weight, float_mlp.fc1.weight)  # same init, now the latent weights
    lenet = build_model(ModelConfig(model="lenet5", weight_kind="binary"), 784, 10, seed=0)
    kinds = [type(m) for m in lenet.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert kinds == [QuantConv2d, QuantConv2d, QuantLinear, QuantLinear]
    assert lenet(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError) as info:
        build_model(ModelConfig(model="two_layer", weight_kind="binary"), 6, 3, seed=0)
    assert info.value.field == "weight_kind"


def test_quantize_weights_and_mixed_specs():
    seq = quantize_weights(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), WeightQuant())
    assert [type(m) for m in seq] == [QuantLinear, nn.ReLU, QuantLinear]
    assert type(quantize_weights(nn.Linear(2, 2), WeightQuant())) is QuantLinear
    seq[2] = QuantLinear.from_float(nn.Linear(3, 2), WeightQuant("ternary"))
    with pytest.raises(ConfigError) as info:
        weight_spec_of(seq)
    assert info.value.field == "model"
    assert weight_spec_of(nn.Linear(2, 2)) is None


@pytest.mark.parametrize("bits,kind", [(None, "float"), (1, "binary"), (2, "uniform"), (4, "uniform"), (8, "uniform")])
def test_weight_bits_alone_pick_the_kind(bits, kind):
    cfg = ModelConfig(model="mlp", weight_bits=bits)
    assert cfg.weight_kind == kind
    spec = cfg.weight_quant()
    assert (spec is None) if bits is None else (spec.kind == kind and spec.bits == bits)
    assert ModelConfig(model="mlp", weight_kind="ternary", weight_bits=2).weight_quant().kind == "ternary"
