"""The default rounding is nearest everywhere a user can start from; ceil is one flag away;
a saved model table without ``rounding`` (written before the field) reads as ceil."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coarsegrad as cg
from coarsegrad.cli.main import build_parser
from coarsegrad.cli.train import resolve_configs
from coarsegrad.config import ModelConfig, data_defaults, load_preset, saved_model_fields


def nearest_oracle(x: np.ndarray, bits: int, alpha: float) -> np.ndarray:
    """α·clip(round-half-down(x/α), 0, L): thresholds (k − ½)α, a point on one goes down."""
    return alpha * np.clip(np.ceil(x / alpha - 0.5), 0, 2**bits - 1)


def test_every_entry_point_defaults_to_nearest():
    assert cg.ActQuant().rounding == ModelConfig().rounding == ModelConfig().act_quant().rounding == "nearest"
    assert cg.QuantReLU(2).quant.rounding == "nearest"
    assert cg.TwoLayerNet(4, 2, 3).act.quant.rounding == "nearest"
    assert cg.quantize_model(torch.nn.Sequential(torch.nn.ReLU()), 2)[0].quant.rounding == "nearest"
    x = torch.tensor([-1.0, 0.0, 0.24, 0.25, 0.26, 0.74, 0.75, 0.76, 1.3, 9.0], dtype=torch.float64)
    expected = nearest_oracle(x.numpy(), 2, 0.5)
    assert expected.tolist() == [0, 0, 0, 0, 0.5, 0.5, 0.5, 1.0, 1.5, 1.5]  # the oracle itself, by hand
    np.testing.assert_array_equal(cg.staircase(x, 2, 0.5).numpy(), expected)
    np.testing.assert_array_equal(cg.quantized_relu(x, 2, 0.5).detach().numpy(), expected)
    np.testing.assert_array_equal(cg.staircase_codes(x, 2, 0.5).numpy(), expected / 0.5)
    # ceil, one argument away: the first threshold at 0
    assert cg.staircase(x, 2, 0.5, "ceil").tolist() == [0, 0, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 1.5]


@pytest.mark.parametrize("preset", ["synthetic", "images"])
def test_presets_name_the_default(preset):
    assert load_preset(preset)["model"]["rounding"] == "nearest"


@pytest.mark.parametrize("data", ["synthetic", "mnist"])
def test_train_defaults_to_nearest_and_takes_ceil_as_a_flag(data):
    parse = build_parser().parse_args
    assert data_defaults(data)["model"]["rounding"] == "nearest"
    assert resolve_configs(parse(["train", "--data", data]))[1].rounding == "nearest"
    model = resolve_configs(parse(["train", "--data", data, "--rounding", "ceil"]))[1]
    assert model.rounding == model.act_quant().rounding == "ceil"
    assert model.act_quant().alpha == cg.optimal_alpha(2)  # ceil keeps the published α


def test_train_help_states_the_default_and_why(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: nearest; nearest: first threshold α/2" in text and "ceil: the authors' code" in text


def test_saved_model_fields_fill_ceil_only_where_rounding_is_missing():
    old = {"bits": 1}
    assert saved_model_fields(old) == {"bits": 1, "rounding": "ceil"} and old == {"bits": 1}
    for rounding in ("ceil", "nearest", "floor"):
        assert saved_model_fields({"rounding": rounding})["rounding"] == rounding
