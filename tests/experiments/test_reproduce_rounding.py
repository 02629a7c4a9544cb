"""``coarsegrad reproduce --rounding``: the staircase of the paper's three experiments (default nearest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coarsegrad.cli.main import build_parser
from coarsegrad.config import ModelConfig
from coarsegrad.errors import ConfigError
from coarsegrad.experiments.reproduce import PLANS, lenet_trials, reproduce, synthetic_trials, two_layer_trials


def _model_roundings(trials):
    return {ModelConfig(**{**kw["model"], "bits": kw["bits"] or 2}).rounding for _, kw in trials}


@pytest.mark.parametrize("rounding", ["ceil", "nearest"])
def test_every_trial_takes_the_rounding(rounding):
    plan = PLANS["quick"]
    assert _model_roundings(synthetic_trials(plan, 1, rounding)) == {rounding}
    assert _model_roundings(two_layer_trials(plan, None, "cpu", 1, rounding=rounding)) == {rounding}
    for float_init in (False, True):
        assert _model_roundings(lenet_trials(PLANS["full"], Path("out"), None, "cpu", 1, float_init, rounding=rounding)) == {
            rounding}


def test_the_default_is_nearest_and_ceil_is_one_flag_away():
    plan = PLANS["quick"]
    assert _model_roundings(synthetic_trials(plan, 1)) == _model_roundings(two_layer_trials(plan, None, "cpu", 1)) == {
        "nearest"}
    parse = build_parser().parse_args
    assert parse(["reproduce"]).rounding == "nearest" and parse(["reproduce", "--rounding", "ceil"]).rounding == "ceil"


def test_a_bad_rounding_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError) as info:
        reproduce(out=tmp_path / "r", only=("synthetic",), rounding="round")
    assert info.value.field == "rounding" and not (tmp_path / "r").exists()
