"""coarsegrad.validate: the one set of checks, and the configs' stated bounds."""

from __future__ import annotations

import datetime
import math

import pytest

from coarsegrad import validate as v
from coarsegrad.config import DataConfig, ModelConfig
from coarsegrad.errors import ConfigError
from coarsegrad.models.build import build_model
from coarsegrad.quant.staircase import check_alpha_range
from coarsegrad.training.loop import TrainConfig


@pytest.mark.parametrize("value", [True, 1.0, "1", None, [1]])
def test_integer_refuses_non_integers(value):
    with pytest.raises(ConfigError, match="^n: must be an integer"):
        v.integer("n", value)


def test_integer_bounds_inclusive():
    assert v.integer("n", 3, lo=3, hi=3) == 3
    with pytest.raises(ConfigError, match=r"n: must be an integer in \[1, 2\], got 3"):
        v.integer("n", 3, lo=1, hi=2)
    assert v.optional_integer("n", None, lo=1) is None


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "0.1", 10**400, None])
def test_number_refuses_non_finite_and_non_numbers(value):
    with pytest.raises(ConfigError, match="^x: must be a"):
        v.number("x", value)


def test_number_bounds_open_and_closed():
    assert v.number("x", 0, lo=0) == 0.0
    with pytest.raises(ConfigError, match=r"x: must be a number > 0"):
        v.number("x", 0, lo=0, lo_open=True)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        v.number("x", 1, lo=0, hi=1, hi_open=True)
    assert v.number("x", math.inf, finite=False) == math.inf


@pytest.mark.parametrize("value", [0, 1, 1e6, "yes", "true", None])
def test_boolean_is_a_real_bool(value):
    with pytest.raises(ConfigError, match="^b: must be true or false"):
        v.boolean("b", value)
    assert v.boolean("b", False) is False


def test_choice_matches_type_and_value():
    assert v.choice("c", "a", ("a", "b")) == "a"
    with pytest.raises(ConfigError, match="c: unknown value 1; valid: a, b"):
        v.choice("c", 1, ("a", "b"))
    with pytest.raises(ConfigError):
        v.choice("c", True, (1, 2))


def test_plain_refuses_dates_and_deep_nesting():
    v.plain("t", {"a": [1, [2, {"b": "c"}]]})
    with pytest.raises(ConfigError, match="t.d: must be a number, string or boolean, got date"):
        v.plain("t", {"d": datetime.date(1979, 5, 27)})
    deep: list = []
    for _ in range(v.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ConfigError, match="nested more than"):
        v.plain("t", deep)


def test_fields_checks_names_and_declared_types():
    assert v.fields("train", {"lr": 1, "batch_size": None}, TrainConfig) == {"lr": 1, "batch_size": None}
    for table, field in (({"lrr": 1}, "train.lrr"), ({"lr": "x"}, "train.lr"), ({"fast": 1}, "train.fast"),
                         ({"optimizer": "sgdd"}, "train.optimizer"), ({"steps": 1.5}, "train.steps")):
        with pytest.raises(ConfigError) as info:
            v.fields("train", table, TrainConfig)
        assert info.value.field == field
    with pytest.raises(ConfigError, match="array of tables"):
        v.fields("train", [{"lr": 1}], TrainConfig)


@pytest.mark.parametrize("cls, kwargs, field, bound", [
    (TrainConfig, {"seed": 2**63}, "seed", str(v.MAX_SEED)),
    (TrainConfig, {"seed": -1}, "seed", "0"),
    (TrainConfig, {"stop_at_perfect": "yes"}, "stop_at_perfect", "true or false"),
    (TrainConfig, {"fast": 1}, "fast", "true or false"),
    (TrainConfig, {"steps": 10**10}, "steps", str(v.MAX_STEPS)),
    (TrainConfig, {"batch_size": 0.0}, "batch_size", "integer"),
    (DataConfig, {"dim": 100000}, "dim", str(v.MAX_DIM)),
    (DataConfig, {"data_seed": 2**64 - 1}, "data_seed", str(v.MAX_SEED)),
    (DataConfig, {"samples_per_class": 2**20, "dim": 4096}, "samples_per_class", str(v.MAX_ELEMENTS)),
    (DataConfig, {"data": 1}, "data", "valid"),
    (ModelConfig, {"batchnorm": 1e6}, "batchnorm", "true or false"),
    (ModelConfig, {"hidden": v.MAX_UNITS + 1}, "hidden", str(v.MAX_UNITS)),
    (ModelConfig, {"init_scale": math.inf}, "init_scale", "finite"),
    (ModelConfig, {"alpha": 1e308}, "alpha", "finite normal float32"),
    (ModelConfig, {"alpha": 1e-39}, "alpha", "finite normal float32"),
    (ModelConfig, {"bits": 8, "alpha": 3.4e38 / 200}, "alpha", "bits=8"),
])
def test_configs_state_their_bounds(cls, kwargs, field, bound):
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert info.value.field == field and bound in str(info.value)


def test_alpha_range_is_exactly_the_float32_normal_range():
    import torch

    info = torch.finfo(torch.float32)
    for bits in (1, 2, 8):
        top = info.max / ((1 << bits) - 1)
        assert check_alpha_range(bits, top) == top and check_alpha_range(bits, info.tiny) == info.tiny
        # q_max at the top is finite in float32
        assert math.isfinite(float(torch.tensor(top * ((1 << bits) - 1), dtype=torch.float32)))
        with pytest.raises(ConfigError):
            check_alpha_range(bits, math.nextafter(top, math.inf))


def test_model_size_is_checked_before_allocation():
    with pytest.raises(ConfigError, match="lenet5 takes 28×28 images"):
        build_model(ModelConfig(model="lenet5"), 40, 4, 0)
    with pytest.raises(ConfigError) as info:
        build_model(ModelConfig(model="mlp", hidden=v.MAX_UNITS), v.MAX_ELEMENTS // v.MAX_UNITS, 10, 0)
    assert info.value.field == "hidden"
