import math

import numpy as np
import pytest
import torch

import coarsegrad as cg
from coarsegrad.quant.staircase import half_gaussian_mse

PUBLISHED = {1: 1.2221, 2: 0.6511, 4: 0.1946}


def numpy_staircase(x, bits, alpha):
    return alpha * np.clip(np.ceil(x / alpha), 0, 2**bits - 1)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("alpha", [0.1, 0.3, 0.6511, 1.0, 1.2221])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_at_every_level(bits, alpha, dtype):
    levels = 2**bits - 1
    k = torch.arange(levels + 1, dtype=dtype)
    x = k * alpha  # the float numbers fl(k·α) in this dtype
    assert torch.equal(cg.staircase(x, bits, alpha, "ceil"), x)
    assert torch.equal(cg.staircase_codes(x, bits, alpha, "ceil"), k)
    # just above a level jumps to the next one; the top level saturates
    above = torch.nextafter(x, torch.full_like(x, math.inf))
    expected = torch.clamp(k + 1, max=levels) * alpha
    assert torch.equal(cg.staircase(above, bits, alpha, "ceil"), expected.to(dtype))


def test_naive_ceil_is_not_exact_but_ours_is():
    x = torch.tensor([3 * 0.1], dtype=torch.float64)  # 0.30000000000000004
    assert torch.ceil(x / 0.1).item() == 4.0  # the formula taken literally overshoots
    assert cg.staircase(x, 4, 0.1).item() == x.item()


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_matches_numpy_away_from_boundaries(bits, gen):
    alpha = 0.37
    x = torch.randn(20000, dtype=torch.float64, generator=gen) * 3
    frac = (x / alpha) - torch.floor(x / alpha)
    x = x[(frac > 1e-6) & (frac < 1 - 1e-6)]
    np.testing.assert_array_equal(cg.staircase(x, bits, alpha, "ceil").numpy(), numpy_staircase(x.numpy(), bits, alpha))


def test_zero_negative_and_saturation():
    x = torch.tensor([-5.0, -1e-30, 0.0, 1e-30, 100.0])
    assert cg.staircase(x, 2, 0.5, "ceil").tolist() == [0.0, 0.0, 0.0, 0.5, 1.5]
    assert cg.staircase(x, 1, 1.0, "ceil").tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("bad", [0, 9, 2.5, True, "2", None])
def test_bad_bits(bad):
    with pytest.raises(cg.ConfigError) as info:
        cg.staircase(torch.zeros(3), bad, 1.0)
    assert info.value.field == "bits"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "1"])
def test_bad_alpha(bad):
    with pytest.raises(cg.ConfigError) as info:
        cg.staircase(torch.zeros(3), 2, bad)
    assert info.value.field == "alpha"


@pytest.mark.parametrize("bits", sorted(PUBLISHED))
def test_optimal_alpha_matches_published(bits):
    assert abs(cg.optimal_alpha(bits) - PUBLISHED[bits]) < 0.005


def numpy_mse(alpha, bits, n=400001, top=12.0):
    """Independent oracle: trapezoid rule on [0, 12] with the half-Gaussian density."""
    x = np.linspace(0.0, top, n)
    density = 2 * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    q = alpha * np.clip(np.round(x / alpha), 0, 2**bits - 1)
    return np.trapezoid((x - q) ** 2 * density, x)


@pytest.mark.parametrize("bits,alpha", [(1, 0.8), (1, 1.2221), (2, 0.65), (3, 0.3), (4, 0.2), (8, 0.02)])
def test_mse_against_numerical_integration(bits, alpha):
    assert half_gaussian_mse(alpha, bits) == pytest.approx(numpy_mse(alpha, bits), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
def test_optimal_alpha_is_the_minimum(bits):
    best = cg.optimal_alpha(bits)
    grid = best * np.linspace(0.8, 1.2, 81)
    mses = [numpy_mse(a, bits, n=100001) for a in grid]
    assert abs(grid[int(np.argmin(mses))] - best) <= 0.006 * best
    assert half_gaussian_mse(best, bits) <= min(half_gaussian_mse(a, bits) for a in grid) + 1e-12


@pytest.mark.parametrize("rounding", ["ceil", "nearest", "floor"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("alpha", [None, 0.1, 0.3, 1 / 3, 1.2221])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_at_every_threshold_for_every_rounding(rounding, bits, alpha, dtype):
    """c(t_j) = j and c(t_j⁺) = j + 1 at t_j = fl((j + o)α), by staircase, staircase_codes and
    autograd, equal to the NumPy count oracle on the thresholds and their neighbours."""
    from oracles import numpy_codes, numpy_thresholds

    quant = cg.ActQuant(bits, alpha, rounding=rounding)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    t = torch.from_numpy(numpy_thresholds(bits, quant.alpha, rounding, np_dtype))
    inf = torch.tensor(math.inf, dtype=dtype)
    x = torch.cat([t, torch.nextafter(t, inf), torch.nextafter(t, -inf), torch.tensor([0.0, -1.0, 1e9], dtype=dtype)])
    want = torch.from_numpy(numpy_codes(x.numpy(), bits, quant.alpha, rounding))
    j = torch.arange(quant.levels, dtype=dtype)
    assert torch.equal(want[: quant.levels], j) and torch.equal(want[quant.levels: 2 * quant.levels], j + 1)
    assert torch.equal(cg.staircase_codes(x, quant), want)
    assert torch.equal(cg.staircase(x, quant), want * quant.alpha)
    xr = x.clone().requires_grad_()
    assert torch.equal(cg.quantized_relu(xr, quant).detach(), want * quant.alpha)


@pytest.mark.parametrize("rounding", ["ceil", "nearest", "floor"])
def test_rounding_matches_the_textbook_formula_away_from_edges(rounding, gen):
    from oracles import numpy_staircase_formula

    alpha = 0.37
    x = torch.randn(20000, dtype=torch.float64, generator=gen) * 3
    frac = (x / alpha) - torch.floor(x / alpha)
    x = x[((frac - 0.5).abs() > 1e-6) & (frac > 1e-6) & (frac < 1 - 1e-6)]
    for bits in (1, 2, 4):
        got = cg.staircase(x, cg.ActQuant(bits, alpha, rounding=rounding)).numpy()
        np.testing.assert_array_equal(got, numpy_staircase_formula(x.numpy(), bits, alpha, rounding))
