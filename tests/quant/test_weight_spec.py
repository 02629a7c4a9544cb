"""WeightQuant: every field validated (ConfigError naming it), bits resolved once,
serialisation round trip, the hard-phase step."""

import dataclasses
import json
import math

import pytest

from coarsegrad.errors import ConfigError
from coarsegrad.quant.weight_spec import WeightQuant


@pytest.mark.parametrize("field,kwargs", [
    ("kind", {"kind": "quaternary"}), ("kind", {"kind": None}),
    ("bits", {"kind": "binary", "bits": 2}), ("bits", {"kind": "ternary", "bits": 1}),
    ("bits", {"kind": "uniform"}), ("bits", {"kind": "uniform", "bits": 1}),
    ("bits", {"kind": "uniform", "bits": 9}), ("bits", {"kind": "uniform", "bits": 4.0}),
    ("bits", {"kind": "uniform", "bits": True}),
    ("granularity", {"granularity": "row"}), ("method", {"method": "sgd"}),
    ("clip", {"clip": 0.0}), ("clip", {"clip": -1.0}), ("clip", {"clip": math.inf}), ("clip", {"clip": "1"}),
    ("rho", {"rho": -0.1}), ("rho", {"rho": 1.5}), ("rho", {"rho": math.nan}),
    ("lam0", {"lam0": 0.0}), ("lam_growth", {"lam_growth": 0.99}), ("lam_growth", {"lam_growth": math.inf}),
    ("hard_after", {"hard_after": -1}), ("hard_after", {"hard_after": 0.0}),
    ("hard_after", {"hard_after": 1.5}), ("hard_after", {"hard_after": True}), ("hard_after", {"hard_after": "5"}),
    ("step", {"step": "pact"}),
])
def test_every_field_is_validated(field, kwargs):
    with pytest.raises(ConfigError) as info:
        WeightQuant(**kwargs)
    assert info.value.field == field and isinstance(info.value, ValueError)


def test_bits_resolved_and_max_code():
    assert WeightQuant("binary").bits == 1 and WeightQuant("binary", 1).max_code == 1
    assert WeightQuant("ternary").bits == 2 and WeightQuant("ternary").max_code == 1
    for b in range(2, 9):
        assert WeightQuant("uniform", b).max_code == 2 ** (b - 1) - 1
    spec = WeightQuant("uniform", 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.bits = 3  # type: ignore[misc]
    assert hash(spec) == hash(WeightQuant("uniform", 4)) and spec == WeightQuant("uniform", 4)


def test_round_trip_through_json():
    for spec in (WeightQuant(), WeightQuant("ternary", granularity="channel", method="bcgd", rho=0.01),
                 WeightQuant("uniform", 3, method="binaryrelax", hard_after=0.5, clip=None),
                 WeightQuant("uniform", 8, method="binaryrelax", hard_after=100, lam_growth=1.02)):
        again = WeightQuant.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec and type(again.hard_after) is type(spec.hard_after)
    with pytest.raises(ConfigError) as info:
        WeightQuant.from_dict({"kind": "binary", "scale": 1})
    assert info.value.field == "scale"
    with pytest.raises(ConfigError):
        WeightQuant.from_dict([("kind", "binary")])


def test_hard_step_and_describe():
    assert WeightQuant(method="binaryrelax").hard_step(10) is None
    assert WeightQuant(method="binaryrelax", hard_after=7).hard_step(None) == 7
    assert WeightQuant(method="binaryrelax", hard_after=0.25).hard_step(10) == 3  # ⌈2.5⌉
    assert WeightQuant(method="binaryrelax", hard_after=1.0).hard_step(10) == 10
    with pytest.raises(ConfigError) as info:
        WeightQuant(method="binaryrelax", hard_after=0.5).hard_step(None)
    assert info.value.field == "hard_after"
    text = WeightQuant("ternary", method="bcgd", rho=0.001).describe()
    assert "kind=ternary" in text and "rho=0.001" in text and "clip" not in text
