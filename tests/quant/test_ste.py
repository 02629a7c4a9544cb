import numpy as np
import pytest
import torch

import coarsegrad as cg
from oracles import boundary_inputs, numpy_dmu, numpy_mu


@pytest.mark.parametrize("name", list(cg.BUILTIN_STES))
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_derivative_and_proxy_against_numpy(name, bits):
    alpha = cg.optimal_alpha(bits)
    q = (2**bits - 1) * alpha
    x = boundary_inputs(bits, alpha)
    ste = cg.get_ste(name)
    t = torch.tensor(x, dtype=torch.float64)
    spec = cg.ActQuant(bits, alpha, name)
    np.testing.assert_array_equal(spec.dmu(t).numpy(), numpy_dmu(name, x, q))
    np.testing.assert_array_equal(ste.derivative(t, q).numpy(), numpy_dmu(name, x, q))
    np.testing.assert_allclose(spec.mu(t).numpy(), numpy_mu(name, x, q), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", list(cg.BUILTIN_STES))
def test_derivative_is_slope_of_proxy(name, gen):
    bits, alpha = 2, 0.65
    ste = cg.get_ste(name)
    x = torch.rand(500, dtype=torch.float64, generator=gen) * 8 - 2
    q = 3 * alpha
    x = x[((x.abs() > 1e-3) & ((x - q).abs() > 1e-3))]
    h = 1e-6
    slope = (ste.mu(x + h, q) - ste.mu(x - h, q)) / (2 * h)
    torch.testing.assert_close(slope, cg.ActQuant(bits, alpha, ste).dmu(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["relu", "clipped_relu", "log_tailed_relu"])
def test_custom_ste_integrates_its_derivative(name):
    builtin = cg.get_ste(name)
    custom = cg.custom_ste("mine", builtin.derivative)
    x = torch.tensor(boundary_inputs(2, 0.65), dtype=torch.float64)
    q = 3 * 0.65
    torch.testing.assert_close(custom.mu(x, q), builtin.mu(x, q), rtol=0, atol=1e-12)
    assert not custom.is_indicator and custom.interval(q) is None


def test_monotone_class():
    for bits in (1, 2, 4):
        alpha = cg.optimal_alpha(bits)
        assert not cg.is_monotone("identity", bits, alpha)
        for name in ("relu", "clipped_relu", "log_tailed_relu"):
            assert cg.is_monotone(name, bits, alpha), name


def test_monotone_violations_are_named():
    rising = cg.custom_ste("rising", lambda x, q: torch.clamp(x, min=0.0))  # μ′ increases
    gap = cg.custom_ste("gap", lambda x, q: ((x > q / 2) & (x <= q)).to(x.dtype))  # 0 on (0, q/2]
    leaky = cg.custom_ste("leaky", lambda x, q: torch.where(x > 0, 1.0, 0.01).to(x.dtype))
    assert "μ′ is not non-increasing on (0, ∞)" in cg.monotone_violations(rising, 2, 0.65)
    assert "μ′ is not > 0 on (0, q]" in cg.monotone_violations(gap, 2, 0.65)
    assert "μ′ is not 0 on (−∞, 0]" in cg.monotone_violations(leaky, 2, 0.65)
    decay = cg.custom_ste("decay", lambda x, q: ((x > 0) & (x <= 2 * q)) * (1 - x / (2 * q)))
    assert cg.is_monotone(decay, 2, 0.65)


def test_unknown_ste_lists_valid_names():
    with pytest.raises(cg.ConfigError) as info:
        cg.get_ste("tanh")
    assert info.value.field == "ste"
    for name in cg.BUILTIN_STES:
        assert name in str(info.value)


def test_custom_ste_needs_a_callable():
    with pytest.raises(cg.ConfigError):
        cg.custom_ste("x", 3.0)
