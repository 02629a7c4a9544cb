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


ORACLE_INTERVALS = {"identity": (-np.inf, np.inf), "relu": (0.0, np.inf), "clipped_relu": (0.0, "q")}


@pytest.mark.parametrize("name", list(cg.BUILTIN_STES))
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_description_derives_mask_derivative_and_interval(name, bits):
    alpha = cg.optimal_alpha(bits)
    q = (2**bits - 1) * alpha
    x = boundary_inputs(bits, alpha)
    ste = cg.get_ste(name)
    t = torch.tensor(x, dtype=torch.float64)
    np.testing.assert_array_equal(ste.derivative(t, q).numpy(), numpy_dmu(name, x, q))
    if name == "log_tailed_relu":
        assert not ste.is_indicator and ste.interval(q) is None
        return
    assert ste.is_indicator
    np.testing.assert_array_equal(ste.indicator(t, q).numpy(), numpy_dmu(name, x, q) == 1)
    lo, hi = ORACLE_INTERVALS[name]
    assert ste.interval(q) == (lo, q if hi == "q" else hi)
    from coarsegrad.theory.expected import indicator_interval

    assert indicator_interval(name, q) == ste.interval(q)
    assert indicator_interval(name, cg.ActQuant(bits, alpha, name)) == ste.interval(q)


def test_pieces_with_closed_and_open_ends():
    from coarsegrad.quant.ste import Piece
    ste = cg.STE("band", pieces=(Piece(0.0, 1.0, 1.0, lo_closed=True, hi_closed=False),
                                 Piece(1.0, np.inf, 0.25, "¼", lo_closed=True)))
    x = torch.tensor([-1.0, 0.0, 0.5, 2.0, 3.0, 10.0], dtype=torch.float64)
    assert ste.derivative(x, 2.0).tolist() == [0.0, 1.0, 1.0, 0.25, 0.25, 0.25]
    assert ste.interval(2.0) is None and not ste.is_indicator
    assert ste.derivative_text() == "1 on [0, q), ¼ on [q, ∞)"
    with pytest.raises(cg.ConfigError):
        Piece(1.0, 0.0)
    for overlapping in ((Piece(0.0, np.inf), Piece(1.0, np.inf, 0.5)),  # μ′ would be ambiguous on (q, ∞)
                        (Piece(0.0, 1.0), Piece(1.0, np.inf, 0.5, lo_closed=True))):  # ... at x = q
        with pytest.raises(cg.ConfigError, match="overlap"):
            cg.STE("both", pieces=overlapping)
    cg.STE("touching", pieces=(Piece(0.0, 1.0), Piece(1.0, np.inf, 0.5)))  # (0, q] and (q, ∞): fine
    with pytest.raises(cg.ConfigError):
        Piece(0.0, 2.0)


def where_reference(pieces, x, q):
    """μ′ the plain way: a torch.where over each piece's bool mask, zeros elsewhere."""
    out = torch.zeros_like(x)
    for p in pieces:
        out = torch.where(p.mask(x, q), p.value(x, q) if callable(p.value) else float(p.value), out)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("q", [1e-3, 0.3, 1.9533, 3.7])
def test_select_free_derivative_equals_the_where_reference(dtype, q):
    from coarsegrad.quant.ste import BUILTIN_STES, Piece
    gen = torch.Generator().manual_seed(3)
    ends = torch.tensor([0.0, q, 2 * q, -q, q / 2], dtype=dtype)
    inf = torch.tensor(np.inf, dtype=dtype)
    x = torch.cat([torch.randn(4000, generator=gen, dtype=dtype) * 2 * q, ends, torch.nextafter(ends, inf),
                   torch.nextafter(ends, -inf), torch.tensor([np.inf, -np.inf, -0.0], dtype=dtype)])
    cases = [ste.pieces for ste in BUILTIN_STES.values()]
    cases += [(Piece(0.0, 1.0, 2.0), Piece(1.0, np.inf, -0.5)),  # constants other than 1
              (Piece(-np.inf, 0.0, 0.25, hi_closed=False), Piece(0.0, 1.0, lambda x, q: x / q, lo_closed=True)),
              (Piece(0.0, 1.0, lambda x, q: 1.0 / x),),  # infinite at its end 0: the torch.where fallback
              (Piece(1.0, np.inf, lambda x, q: 1.0 / (x - x.new_tensor(q / 2))),)]  # infinite off the piece
    assert torch.isinf(1.0 / (x - x.new_tensor(q / 2))).any()  # ... at x = q/2, which the clip avoids
    for pieces in cases:
        got = cg.STE("s", pieces=pieces).derivative(x, q)
        assert torch.equal(got, where_reference(pieces, x, q))
        assert got.dtype == dtype


def test_module_docstring_table_is_the_rendered_table():
    import coarsegrad.quant.ste as ste_module

    doc_table = [line.strip() for line in ste_module.__doc__.splitlines() if line.strip().startswith("|")]
    assert doc_table == cg.ste_table().splitlines()
    assert "1{0 < x ≤ q}" in cg.ste_table() and "1/(x − q + 1) on (q, ∞)" in cg.ste_table()
