"""Integer form: codes equal the training model's, folds equal their formulas, int8 is exact integer arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import (
    bn_mlp,
    boundary_inputs,
    boundary_values,
    count_oracle,
    identity_mlp,
    identity_two_layer,
)

import coarsegrad as cg
from coarsegrad.errors import ConfigError, DataError
from coarsegrad.export import IntegerModel, threshold_codes, to_integer
from coarsegrad.export.agreement import agreement, torch_outputs

ALPHAS = [(1, None), (2, None), (4, None), (4, 0.1), (3, 1 / 3), (8, 0.01), (2, 0.7)]
ROUNDINGS = ["ceil", "nearest", "floor"]
OFFSET = {"ceil": 0.0, "nearest": 0.5, "floor": 1.0}


def _alpha(bits, alpha):
    return cg.optimal_alpha(bits) if alpha is None else alpha


def test_cg_export_is_reachable_without_onnx():
    import subprocess
    import sys

    code = "import sys, coarsegrad as cg; cg.export.to_integer; print('onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("bits,alpha", ALPHAS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_threshold_codes_match_count_oracle_and_staircase_codes_at_boundaries(bits, alpha, rounding):
    alpha = _alpha(bits, alpha)
    quant = cg.ActQuant(bits, alpha, rounding=rounding)
    z = boundary_values(bits, alpha)
    ours = threshold_codes(z, quant)
    assert np.array_equal(ours, count_oracle(z, bits, alpha, rounding))
    torch_codes = cg.staircase_codes(torch.from_numpy(z), quant).numpy()
    assert np.array_equal(ours, torch_codes.astype(np.uint8))
    a = np.float32(alpha)
    levels = (1 << bits) - 1
    for j in range(levels):  # right-closed steps: c(t_j) = j, just above is j + 1
        edge = np.float32(np.float32(j + OFFSET[rounding]) * a)
        assert threshold_codes(np.array([edge]), quant)[0] == j
        above = np.nextafter(edge, np.float32(np.inf))
        assert threshold_codes(np.array([above]), quant)[0] == j + 1
    assert threshold_codes(np.array([0.0, -0.0, -5.0], np.float32), quant).tolist() == [0, 0, 0]


@pytest.mark.parametrize("bits,alpha", ALPHAS)
@pytest.mark.parametrize("builder", [identity_two_layer, identity_mlp])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_engine_codes_equal_torch_codes_exactly_on_boundary_inputs(bits, alpha, builder, rounding, gen):
    alpha = _alpha(bits, alpha)
    model = builder(6, bits, alpha, gen, rounding)
    x = boundary_inputs(bits, alpha, 6, gen)
    integer = to_integer(model)
    assert integer.rounding == rounding and integer.quant.levels == model.act.quant.levels
    ref = torch_outputs(model, x)
    assert np.array_equal(ref.preact, x)  # z = x exactly: the test inputs hit the edges
    codes = integer.codes(x)
    assert np.array_equal(codes, ref.codes)
    assert np.array_equal(codes, count_oracle(x, bits, alpha, rounding))
    np.testing.assert_allclose(integer.logits(x), ref.logits, rtol=1e-5, atol=1e-4)
    assert np.array_equal(integer.predict(x), ref.logits.argmax(1))


def test_folded_weights_follow_the_formulas(gen):
    model = bn_mlp(12, 16, 5, 2, gen)
    integer = to_integer(model)
    bn = model.norm
    scale = 1 / np.sqrt(bn.running_var.double().numpy() + bn.eps)
    w = model.fc1.weight.detach().double().numpy() * scale[:, None]
    b = (model.fc1.bias.detach().double().numpy() - bn.running_mean.double().numpy()) * scale
    assert np.array_equal(integer.w1, w.astype(np.float32))
    assert np.array_equal(integer.b1, b.astype(np.float32))
    alpha32 = np.float32(model.act.alpha)
    assert integer.alpha == float(alpha32)
    assert np.array_equal(integer.w2, (np.float64(alpha32) * model.fc2.weight.detach().double().numpy()).astype(np.float32))
    assert np.array_equal(integer.b2, model.fc2.bias.detach().numpy())


def test_integer_form_of_fixed_two_layer_net_is_alpha_times_block_of_ones(gen):
    model = cg.TwoLayerNet(8, 3, 4, bits=2, generator=gen)
    integer = to_integer(model)
    block = np.repeat(np.eye(3), 4, axis=1)
    assert np.array_equal(integer.w2, (np.float32(model.act.alpha) * block).astype(np.float32))
    assert not integer.b1.any() and not integer.b2.any()


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_bn_mlp_codes_agree_except_near_threshold(bits, rounding, gen):
    model = bn_mlp(30, 64, 5, bits, gen, rounding)
    x = (torch.randn(3000, 30, generator=gen) * 2 + 0.5).numpy()
    report = agreement(model, to_integer(model), x)
    counts = report["torch_vs_engine"]
    assert counts["code_disagree_unexplained"] == 0
    assert counts["pred_disagree_unexplained"] == 0
    assert counts["code_disagree"] <= report["units_near_threshold"] < 0.01 * report["codes_total"]


def test_agreement_detects_a_wrong_fold(gen):
    """The oracle can fail: a bias off by 1e-3 must show up as unexplained disagreements."""
    model = bn_mlp(30, 64, 5, 2, gen)
    good = to_integer(model)
    bad = IntegerModel(bits=good.bits, alpha=good.alpha, w1=good.w1, b1=good.b1 + np.float32(1e-3),
                       w2=good.w2, b2=good.b2)
    x = (torch.randn(3000, 30, generator=gen) * 2).numpy()
    assert agreement(model, bad, x)["torch_vs_engine"]["code_disagree_unexplained"] > 0


def test_int8_weights_are_symmetric_per_channel(gen):
    model = bn_mlp(20, 32, 4, 2, gen)
    integer = to_integer(model, weights="int8", input_range=(-3.0, 4.0))
    q = integer.w1
    assert q.dtype == np.int8 and int(np.abs(q.astype(int)).max()) <= 127
    assert (np.abs(q.astype(int)).max(axis=1) == 127).all()  # each row uses its full range
    ref = to_integer(model).w1.astype(np.float64)
    s = np.abs(ref).max(axis=1) / 127
    assert np.all(np.abs(q * s[:, None] - ref) <= s[:, None] / 2 + 1e-7)
    step, alpha = float(np.float32(7.0 / 255)), integer.alpha
    assert integer.input_step == step and integer.input_zero == round(3.0 / step)
    np.testing.assert_allclose(integer.w1_scale, step * s / alpha, rtol=1e-6)
    np.testing.assert_array_equal(integer.edges, np.arange(3, dtype=np.float32))  # in units of α


def test_int8_first_layer_is_exact_integer_arithmetic(gen):
    model = bn_mlp(20, 32, 4, 2, gen)
    integer = to_integer(model, weights="int8", input_range=(-3.0, 4.0))
    x = (torch.rand(500, 20, generator=gen) * 9 - 4.5).numpy()  # some inputs outside the range
    p = integer.quantize_input(x)
    expected_p = np.clip(np.rint(x / np.float32(integer.input_step)) + integer.input_zero, 0, 255)
    assert np.array_equal(p, expected_p.astype(np.uint8))
    acc = p.astype(np.int64) @ integer.w1.astype(np.int64).T  # exact integer oracle
    u = acc.astype(np.float32) * integer.w1_scale + integer.b1
    assert np.array_equal(integer.preactivations(x), u)
    assert np.array_equal(integer.codes(x), count_oracle(u, 2, 1.0))  # edges 0, 1, 2
    assert np.array_equal(integer.codes(x), np.clip(np.ceil(u), 0, 3))


def test_int8_is_exact_for_inputs_on_the_uint8_lattice(gen):
    """Inputs x = lo + k·a (like normalised 8-bit pixels) quantize back to k exactly."""
    model = bn_mlp(20, 32, 4, 2, gen)
    mean, std = 0.1307, 0.3081
    integer = to_integer(model, weights="int8", input_range=(-mean / std, (1 - mean) / std))
    k = torch.randint(0, 256, (400, 20), generator=gen)
    x = ((k.float() / 255 - mean) / std).numpy()  # float32, as prepare_dataset computes it
    assert np.array_equal(integer.quantize_input(x), k.numpy().astype(np.uint8))
    # α·u then differs from the float model's z only by the weight rounding: |Δz| ≤ Σ|x|·s/2
    z_float = to_integer(model).preactivations(x).astype(np.float64)
    s = integer.w1_scale.astype(np.float64) * integer.alpha / integer.input_step
    bound = np.abs(x).astype(np.float64).sum(1, keepdims=True) * s / 2 + 1e-4
    assert np.all(np.abs(integer.preactivations(x) * integer.alpha - z_float) <= bound)


def test_int8_input_range_is_widened_to_contain_zero(gen):
    model = bn_mlp(6, 8, 3, 2, gen)
    integer = to_integer(model, weights="int8", input_range=(1.0, 2.0))
    assert integer.input_zero == 0 and integer.input_lo == 0.0
    assert integer.quantize_input(np.array([[0, 2, 3, -1, 0, 0]], np.float32)).tolist() == [[0, 255, 255, 0, 0, 0]]


def test_errors_are_input_errors(gen):
    model = bn_mlp(6, 8, 3, 2, gen)
    with pytest.raises(ConfigError, match="input_range"):
        to_integer(model, weights="int8")
    with pytest.raises(ConfigError, match="weights"):
        to_integer(model, weights="int4")
    with pytest.raises(ConfigError, match="model"):
        to_integer(torch.nn.Linear(3, 3))
    integer = to_integer(model)
    with pytest.raises(DataError, match="features"):
        integer.predict(np.zeros((2, 7), np.float32))
    with pytest.raises(DataError, match="NaN"):
        integer.predict(np.full((2, 6), np.nan, np.float32))
    with pytest.raises(DataError, match="w2"):
        IntegerModel(bits=2, alpha=0.5, w1=integer.w1, b1=integer.b1, w2=integer.w2[:, :3], b2=integer.b2)
