"""ActQuant: validation of every field, α resolved once, derived values, serialisation;
optimal α per rounding against an independent quadrature."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate

import coarsegrad as cg
import coarsegrad.quant.spec as spec_module
from coarsegrad.quant.staircase import half_gaussian_mse
from oracles import OFFSETS, numpy_thresholds

PUBLISHED = {1: 1.2221, 2: 0.6511, 4: 0.1946}
ROUNDINGS = ["ceil", "nearest", "floor"]


@pytest.mark.parametrize("field,kwargs", [
    ("bits", {"bits": 0}), ("bits", {"bits": 9}), ("bits", {"bits": 2.0}), ("bits", {"bits": True}),
    ("bits", {"bits": None}), ("alpha", {"alpha": 0.0}), ("alpha", {"alpha": -1.0}),
    ("alpha", {"alpha": math.nan}), ("alpha", {"alpha": math.inf}), ("alpha", {"alpha": "1"}),
    ("ste", {"ste": "tanh"}), ("ste", {"ste": 3}), ("rounding", {"rounding": "round"}),
    ("rounding", {"rounding": None}), ("alpha_rule", {"alpha_rule": "best"}),
])
def test_every_field_is_validated(field, kwargs):
    with pytest.raises(cg.ConfigError) as info:
        cg.ActQuant(**kwargs)
    assert info.value.field == field and isinstance(info.value, ValueError)


def test_frozen_and_resolved():
    q = cg.ActQuant(4, None, "relu", "nearest")
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.bits = 3
    assert isinstance(q.alpha, float) and q.ste is cg.get_ste("relu")
    assert q.levels == 15 and q.q_max == 15 * q.alpha
    assert dataclasses.replace(q, ste="clipped_relu").ste is cg.get_ste("clipped_relu")
    assert hash(q) == hash(cg.ActQuant(4, q.alpha, "relu", "nearest")) and q == cg.ActQuant(4, q.alpha, "relu", "nearest")


@pytest.mark.parametrize("bits", range(1, 9))
def test_default_alpha_rules(bits):
    # the default is nearest with its matched α, the published one
    assert cg.ActQuant(bits).rounding == "nearest" and cg.ActQuant(bits).alpha_rule == "matched"
    assert cg.ActQuant(bits).alpha == cg.optimal_alpha(bits) == cg.optimal_alpha(bits, "nearest")
    # ceil keeps the published (nearest-rounding) α: results made before the rounding field stay identical
    assert cg.ActQuant(bits, rounding="ceil").alpha == cg.optimal_alpha(bits, "nearest")
    assert cg.ActQuant(bits, rounding="ceil").alpha_rule == "nearest"
    assert cg.ActQuant(bits, rounding="ceil", alpha_rule="matched").alpha == cg.optimal_alpha(bits, "ceil")
    for rounding in ("nearest", "floor"):
        assert cg.ActQuant(bits, rounding=rounding).alpha == cg.optimal_alpha(bits, rounding)
    assert cg.ActQuant(bits, 0.5, rounding="floor", alpha_rule="nearest").alpha == 0.5  # given α wins


def test_model_config_resolves_alpha_with_its_rounding():
    assert cg.TwoLayerNet(4, 2, 3).act.alpha == cg.optimal_alpha(2)
    from coarsegrad.config import ModelConfig

    assert ModelConfig().act_quant() == cg.ActQuant(2)
    assert ModelConfig(rounding="floor").act_quant().alpha == cg.optimal_alpha(2, "floor")
    assert ModelConfig(bits=3, alpha=0.25, ste="relu", rounding="nearest").act_quant() == \
        cg.ActQuant(3, 0.25, "relu", "nearest")
    with pytest.raises(cg.ConfigError, match="^rounding"):
        ModelConfig(rounding="up")


def test_alpha_is_resolved_once_per_model(monkeypatch):
    calls = []
    original = spec_module.optimal_alpha
    monkeypatch.setattr(spec_module, "optimal_alpha", lambda *a: calls.append(a) or original(*a))
    cg.MLP(8, 16, 3, bits=3)
    cg.quantize_model(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.ReLU(), torch.nn.ReLU()), 4)
    from coarsegrad.models.networks import LeNet5

    LeNet5(quant=cg.ActQuant(5))  # three quantized layers, one spec
    assert calls == [(3, "nearest"), (4, "nearest"), (5, "nearest")]


def test_optimal_alpha_is_cached():
    cg.optimal_alpha.cache_clear()
    cg.optimal_alpha(3, "floor")
    cg.optimal_alpha(3, "floor")
    info = cg.optimal_alpha.cache_info()
    assert (info.hits, info.misses) == (1, 1)


@pytest.mark.parametrize("dtype,np_dtype", [(torch.float32, np.float32), (torch.float64, np.float64)])
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("bits", [1, 2, 5, 8])
def test_thresholds_are_the_floats_of_j_plus_offset_times_alpha(dtype, np_dtype, rounding, bits):
    q = cg.ActQuant(bits, 0.1, rounding=rounding)
    t = q.thresholds(dtype)
    assert len(t) == q.levels and t == q.thresholds(dtype)  # cached, stable
    np.testing.assert_array_equal(np.array(t, dtype=np_dtype), numpy_thresholds(bits, 0.1, rounding, np_dtype))
    assert q.threshold(q.levels, dtype) > t[-1]


def test_to_dict_round_trip_and_custom_ste():
    q = cg.ActQuant(3, None, "log_tailed_relu", "floor")
    d = q.to_dict()
    assert json.loads(json.dumps(d)) == d and d["ste"] == "log_tailed_relu"
    assert cg.ActQuant.from_dict(d) == q
    with pytest.raises(cg.ConfigError, match="^colour"):
        cg.ActQuant.from_dict({**d, "colour": 1})
    custom = cg.ActQuant(2, None, cg.custom_ste("mine", lambda x, q: (x > 0).to(x.dtype)))
    with pytest.raises(cg.ConfigError) as info:
        custom.to_dict()
    assert info.value.field == "ste"


def test_conveniences_only_build_a_spec():
    q = cg.ActQuant(2, 0.5, "relu", "nearest")
    assert cg.QuantReLU(2, 0.5, "relu", "nearest").quant == q == cg.QuantReLU(q).quant
    assert cg.MLP(4, 5, 2, bits=2, alpha=0.5, ste="relu").act.quant == cg.ActQuant(2, 0.5, "relu")
    with pytest.raises(cg.ConfigError, match="^quant"):
        cg.QuantReLU(q, 0.3)
    with pytest.raises(cg.ConfigError, match="^quant"):
        cg.MLP(4, 5, 2, bits=3, quant=q)


def quad_mse(alpha, bits, rounding):
    """Independent oracle: scipy quad of (x − σ(x))²·2φ(x) over [0, ∞), split at every edge."""
    levels = 2**bits - 1
    o = OFFSETS[rounding]
    edges = [0.0] + [(j + o) * alpha for j in range(levels) if (j + o) * alpha > 0] + [math.inf]
    density = lambda x: 2 * math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mid = lo + 1e-9 if math.isinf(hi) else 0.5 * (lo + hi)
        level = alpha * min(levels, max(0, math.ceil(mid / alpha - o)))  # σ is constant on the cell
        total += integrate.quad(lambda x, c=level: (x - c) ** 2 * density(x), lo, hi, epsabs=1e-13)[0]
    return total


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("bits,alpha", [(1, 0.8), (1, 1.2221), (2, 0.65), (3, 0.3), (4, 0.2), (8, 0.02)])
def test_mse_against_quadrature(rounding, bits, alpha):
    assert half_gaussian_mse(alpha, bits, rounding) == pytest.approx(quad_mse(alpha, bits, rounding), rel=1e-7)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_optimal_alpha_minimises_the_quadrature_mse(rounding, bits):
    best = cg.optimal_alpha(bits, rounding)
    assert 0 < best < 6.0 / (2**bits - 1) * 0.99  # an interior optimum of the search range
    grid = best * np.array([0.97, 0.99, 1.01, 1.03])
    at_best = quad_mse(best, bits, rounding)
    assert all(at_best < quad_mse(a, bits, rounding) for a in grid)


@pytest.mark.parametrize("bits", sorted(PUBLISHED))
def test_nearest_reproduces_the_published_values(bits):
    assert abs(cg.optimal_alpha(bits, "nearest") - PUBLISHED[bits]) < 0.005


def test_ceil_one_bit_optimum_is_the_half_gaussian_mean():
    # σ = α·1{x > 0}: E[(x − α)²] is minimal at α = E[x] = √(2/π)
    assert cg.optimal_alpha(1, "ceil") == pytest.approx(math.sqrt(2 / math.pi), abs=1e-6)


def test_from_dict_reads_a_spec_without_rounding_as_ceil():
    """A dict saved before the rounding field existed is the ceil it was; to_dict always writes it."""
    q = cg.ActQuant(1, 0.5, "relu")
    assert q.rounding == "nearest" and q.to_dict()["rounding"] == "nearest"
    assert cg.ActQuant.from_dict(q.to_dict()) == q
    old = {"bits": 1, "alpha": 0.5, "ste": "relu"}
    assert cg.ActQuant.from_dict(old) == cg.ActQuant(1, 0.5, "relu", "ceil")
    assert cg.ActQuant.from_dict({"bits": 1, "ste": "relu"}).alpha == cg.optimal_alpha(1)  # ceil keeps the published α
