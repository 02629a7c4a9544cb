"""The weight projections Q(w) against the NumPy oracle: exact codes, scales, the points
exactly at the thresholds (|w| = Δ, w/s at .5, w = 0), per channel, all-zero weights,
float32 and float64; Q(w) = scales·codes exactly."""

import numpy as np
import pytest
import torch

from coarsegrad.errors import DataError
from coarsegrad.quant.weight_spec import WeightQuant
from coarsegrad.quant.weights import project, weight_codes
from oracles import numpy_weight_codes

SPECS = [("binary", None), ("ternary", None)] + [("uniform", b) for b in range(2, 9)]
DTYPES = [torch.float32, torch.float64]


def _check(w, kind, bits, granularity, exact_scale=True):
    spec = WeightQuant(kind, bits, granularity)
    codes, scales = weight_codes(w, spec)
    want_codes, want_scales = numpy_weight_codes(w.numpy(), kind, spec.bits, granularity)
    assert codes.dtype == torch.int8 and scales.dtype == w.dtype
    assert tuple(scales.shape) == want_scales.shape
    np.testing.assert_array_equal(codes.numpy(), want_codes)
    if exact_scale:
        np.testing.assert_array_equal(scales.numpy(), want_scales)
    else:
        rtol = 1e-6 if w.dtype == torch.float32 else 1e-12
        np.testing.assert_allclose(scales.numpy(), want_scales, rtol=rtol)
    q = project(w, spec)
    assert q.dtype == w.dtype
    assert torch.equal(q, scales * codes.to(w.dtype))  # Q(w) = scales·codes exactly
    assert int(codes.abs().max()) <= spec.max_code
    return codes, scales


@pytest.mark.parametrize("kind,bits", SPECS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 3, 3)])
def test_random_weights_match_oracle(kind, bits, dtype, granularity, shape, gen):
    w = torch.randn(shape, dtype=dtype, generator=gen)
    _check(w, kind, bits, granularity, exact_scale=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_sign_of_zero_is_plus_one(dtype):
    w = torch.tensor([[0.0, -0.0, 0.5, -1.5], [0.0, 0.0, 0.0, 0.0]], dtype=dtype)
    codes, scales = _check(w, "binary", None, "channel")
    assert codes.tolist() == [[1, 1, 1, -1], [1, 1, 1, 1]]
    assert scales.flatten().tolist() == [0.5, 0.0]  # mean|w| = 2/4; an all-zero row: α = 0
    assert project(w, WeightQuant("binary")).tolist()[0] == [0.25, 0.25, 0.25, -0.25]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", [3, 4])
def test_uniform_half_way_points_round_to_even(dtype, bits):
    m = 2 ** (bits - 1) - 1
    s = 0.5  # max|w| = m·s makes s exact, so w/s hits .5 exactly
    ratios = [m, -m, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.0, 0.49, 1.51]
    w = torch.tensor(ratios, dtype=dtype) * s
    codes, scales = _check(w, "uniform", bits, "layer")
    assert float(scales) == s
    assert codes.tolist() == [m, -m, 0, 0, 2, -2, 2, -2, 0, 0, 2]


def _ternary_at_threshold():
    """A float64 weight row whose first entry equals Δ = 0.7·mean|w| exactly (mean over the
    row that includes it), found by walking ulps around the fixed point x = 0.7·S/(n − 0.7)."""
    rest = np.array([1.0, -2.0, 0.25, 3.0, -0.5, 0.125, 0.75])
    n, total = rest.size + 1, np.abs(rest).sum()
    x = 0.7 * total / (n - 0.7)
    for _ in range(200):
        row = np.concatenate([[x], rest])
        delta = float(0.7 * torch.tensor(row).abs().mean())
        if delta == x and 0.7 * np.abs(row).mean() == x:
            return row
        x = np.nextafter(x, delta)
    raise AssertionError("no exact fixed point found")


def test_ternary_weight_at_threshold_goes_to_zero():
    row = _ternary_at_threshold()
    w = torch.tensor(np.stack([row, -row]))
    codes, scales = _check(w, "ternary", None, "channel")
    assert codes[0, 0] == 0 and codes[1, 0] == 0  # |w| = Δ: not > Δ
    assert codes[0, 1:].tolist() == [1, -1, 0, 1, 0, 0, 1]  # |w| > Δ ≈ 0.7·mean
    kept = np.abs(row[1:])[codes[0, 1:].numpy() != 0]
    assert float(scales[0, 0]) == kept.mean()
    above = row.copy()
    above[0] = np.nextafter(row[0], np.inf)  # one ulp above (Δ itself moves by < 1 ulp)
    c_above, _ = _check(torch.tensor(above[None]), "ternary", None, "layer")
    assert c_above[0, 0] == 1


@pytest.mark.parametrize("kind,bits", SPECS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_all_zero_weights_give_zero(kind, bits, dtype, granularity):
    w = torch.zeros(3, 4, dtype=dtype)
    codes, scales = _check(w, kind, bits, granularity)
    assert not bool(scales.any()) and not bool(project(w, WeightQuant(kind, bits, granularity)).any())
    # one zero channel beside a non-zero one: only that channel's scale is 0
    w[1] = torch.tensor([1.0, -2.0, 0.5, 0.25], dtype=dtype)
    _check(w, kind, bits, granularity)


def test_per_channel_scales_are_per_output_channel(gen):
    w = torch.randn(6, 2, 5, 5, generator=gen, dtype=torch.float64)
    w[2] *= 100.0
    codes, scales = weight_codes(w, WeightQuant("uniform", 4, "channel"))
    assert scales.shape == (6, 1, 1, 1)
    for o in range(6):
        c_o, s_o = weight_codes(w[o:o + 1], WeightQuant("uniform", 4, "layer"))
        assert torch.equal(codes[o:o + 1], c_o) and float(scales[o]) == float(s_o)


@pytest.mark.parametrize("bad,granularity", [
    (torch.zeros(3, dtype=torch.int64), "layer"), (torch.zeros(0, 3), "layer"),
    (torch.tensor(1.0), "layer"), (torch.zeros(5), "channel"),
])
def test_bad_weights_raise_data_error(bad, granularity):
    with pytest.raises(DataError) as info:
        weight_codes(bad, WeightQuant(granularity=granularity))
    assert info.value.field == "weight"


def test_uniform_float32_quotients_that_land_on_a_half_take_the_float64_rule():
    """Weights a few ulps around (k + ½)·s: some float32 quotients fl32(w/s) are exactly
    k + ½ while the float64 ones are not; the codes must follow the float64 quotient."""
    rows, landed = [], 0
    for i, top in enumerate(np.linspace(0.6, 1.9, 40, dtype=np.float32)):
        s = np.float32(np.float64(top) / 7)
        row = [top]
        for k in range(7):
            x = np.float32((k + 0.5) * np.float64(s))
            for _ in range(3):
                row += [x, -x]
                x = np.nextafter(x, np.float32(np.inf) if i % 2 else np.float32(-np.inf))
        row = np.array(row, dtype=np.float32)
        r32, r64 = row / s, row.astype(np.float64) / np.float64(s)
        landed += int(((np.abs(r32 - np.round(r32)) == 0.5) & (np.abs(r64 - np.round(r64)) != 0.5)).sum())
        rows.append(row)
    assert landed > 0  # the case is present: float32 rounding alone would give other codes
    for row in rows:
        _check(torch.from_numpy(row)[None], "uniform", 4, "layer")
