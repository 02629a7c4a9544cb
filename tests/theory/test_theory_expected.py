"""Expected coarse gradients against closed forms (Yin et al. 2019, Stein) and brute Monte Carlo."""

import math

import numpy as np
import pytest
import torch

from coarsegrad import custom_ste
from coarsegrad.theory import closed_forms as cf
from coarsegrad.theory.bivariate import norm_pdf
from coarsegrad.theory.diagnostics import angle_grid, make_teacher, point_record
from coarsegrad.theory.expected import expected_coarse_grad, expected_coarse_grad_at, indicator_interval
from coarsegrad.theory.montecarlo import monte_carlo
from coarsegrad.theory.population import Teacher, optimal_v_at, population_grad_w

BUILTIN = ("identity", "relu", "clipped_relu", "log_tailed_relu")


def _problem(seed, m=4, n=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(m), rng.standard_normal(n), rng.standard_normal(m),
            rng.standard_normal(n))


@pytest.mark.parametrize("seed", range(5))
def test_binary_relu_equals_paper_closed_form(seed):
    v, w, vs, ws = _problem(seed)
    t = Teacher(vs, ws, bits=1, alpha=1.0)
    np.testing.assert_allclose(expected_coarse_grad(v, w, t, "relu")[0],
                               cf.binary_expected_relu(v, w, vs, ws), atol=1e-13)
    np.testing.assert_allclose(expected_coarse_grad(v, w, t, "identity")[0],
                               cf.binary_expected_identity(v, w, vs, ws), atol=1e-13)


@pytest.mark.parametrize("bits,alpha,r", [(2, 0.6511, 1.0), (4, 0.1946, 0.7), (4, 0.4, 2.0)])
def test_identity_equals_stein_formula_for_any_bits(bits, alpha, r):
    """E[g_id] = α Σ_k φ(kα/r)·‖v‖²ŵ − α Σ_l φ(lα/r*)·vᵀv*·ŵ* (only the i = j terms survive)."""
    v, w, vs, ws = _problem(bits)
    w = r * w / np.linalg.norm(w)
    t = Teacher(vs, ws, bits=bits, alpha=alpha)
    k = np.arange(2**bits - 1)
    a = alpha * norm_pdf(k * alpha / r).sum()
    b = alpha * norm_pdf(k * alpha / np.linalg.norm(ws)).sum()
    want = a * (v @ v) * w / r - b * (v @ vs) * ws / np.linalg.norm(ws)
    np.testing.assert_allclose(expected_coarse_grad(v, w, t, "identity")[0], want, atol=1e-13)


@pytest.mark.parametrize("bits,alpha,r", [(1, 1.2221, 1.0), (2, 0.6511, 1.0), (2, 0.3, 1.4),
                                          (4, 0.1946, 1.0), (4, 0.25, 3.0)])
def test_every_ste_matches_brute_force_monte_carlo(bits, alpha, r):
    v, w, vs, ws = _problem(7 * bits + int(r * 10))
    w = r * w / np.linalg.norm(w)
    t = Teacher(vs, ws, bits=bits, alpha=alpha)
    for ste in BUILTIN:
        est = monte_carlo(v, w, t, ste, 200_000, torch.Generator().manual_seed(bits))
        exact, se = expected_coarse_grad(v, w, t, ste, samples=1 << 17,
                                         generator=torch.Generator().manual_seed(99))
        gap = np.abs(est.grad - exact)
        assert np.all(gap <= 4 * np.sqrt(est.grad_se**2 + se**2) + 1e-12), (ste, gap, est.grad_se)
        assert (se == 0).all() == (ste != "log_tailed_relu")


def test_at_theta_pi_the_angular_part_vanishes_and_matches_monte_carlo():
    v, _, vs, ws = _problem(21)
    t = Teacher(vs, ws, bits=2, alpha=0.6511)
    w = -1.3 * ws / np.linalg.norm(ws)
    for ste in ("identity", "relu", "clipped_relu"):
        e = expected_coarse_grad_at(v, 1.3, math.pi, t, ste)
        assert e.angular == 0.0
        est = monte_carlo(v, w, t, ste, 200_000, torch.Generator().manual_seed(5))
        exact = expected_coarse_grad(v, w, t, ste)[0]
        assert np.all(np.abs(est.grad - exact) <= 4 * est.grad_se + 1e-12)


def test_spurious_minimiser_relu_vanishes_identity_does_not():
    """Yin et al. 2019: at θ = π, v = (I + 11ᵀ)⁻¹(11ᵀ − I)v*, E[g_relu] = 0 but E[g_id] ≠ 0."""
    _, _, vs, ws = _problem(4, m=6)
    t = Teacher(vs, ws, bits=1, alpha=1.0)
    v = cf.binary_spurious_v(vs)
    relu = expected_coarse_grad_at(v, 1.0, math.pi, t, "relu")
    ident = expected_coarse_grad_at(v, 1.0, math.pi, t, "identity")
    assert abs(relu.radial) < 1e-14 and relu.angular == 0.0
    assert abs(ident.radial) > 1e-3


def test_binary_descent_property_on_an_angle_grid():
    """For b = 1, ∂f/∂w ⊥ w and ⟨E[g_μ], ∂f/∂w⟩ = vᵀv*·C₂·vᵀv*/(2πr) ≥ 0 for any μ′ ≥ 0."""
    teacher = make_teacher(5, 3, 1, seed=3)
    recs = angle_grid(teacher, list(BUILTIN), np.linspace(0.05, math.pi, 15), v_mode="optimal",
                      samples=1 << 14)
    assert all(r["inner"] >= -4 * r["inner_se"] - 1e-15 for r in recs)
    assert all(abs(r["grad_w_radial"]) < 1e-14 for r in recs)


def test_cosine_record_matches_vectors():
    v, w, vs, ws = _problem(13)
    t = Teacher(vs, ws, bits=2, alpha=0.6511)
    rec = point_record(v, float(np.linalg.norm(w)), float(np.arccos(w @ ws / np.linalg.norm(w) / np.linalg.norm(ws))),
                       t, "clipped_relu")
    g, d = expected_coarse_grad(v, w, t, "clipped_relu")[0], population_grad_w(v, w, t)
    assert rec["inner"] == pytest.approx(float(g @ d), rel=1e-10)
    assert rec["cosine"] == pytest.approx(float(g @ d / np.linalg.norm(g) / np.linalg.norm(d)), rel=1e-10)


def test_custom_stes_use_monte_carlo():
    v, w, vs, ws = _problem(17)
    t = Teacher(vs, ws, bits=2, alpha=0.6511)
    same_as_relu = custom_ste("my_relu", lambda x, q: (x > 0).to(x.dtype))
    assert indicator_interval(same_as_relu, 1.0) is None
    mc, se = expected_coarse_grad(v, w, t, same_as_relu, samples=1 << 17,
                                  generator=torch.Generator().manual_seed(1))
    exact = expected_coarse_grad(v, w, t, "relu")[0]
    assert np.all(se > 0) and np.all(np.abs(mc - exact) <= 4 * se)
    decay = custom_ste("decay", lambda x, q: (x > 0) * (x <= 2 * q) * (1 - x / (2 * q)))
    g, se = expected_coarse_grad(v, w, t, decay, samples=1 << 16, generator=torch.Generator().manual_seed(2))
    est = monte_carlo(v, w, t, decay, 200_000, torch.Generator().manual_seed(3))
    assert np.all(np.abs(est.grad - g) <= 4 * np.sqrt(est.grad_se**2 + se**2))


def test_monte_carlo_is_reproducible_with_a_generator():
    v, w, vs, ws = _problem(2)
    t = Teacher(vs, ws, bits=4, alpha=0.1946)
    a = expected_coarse_grad_at(v, 1.0, 2.0, t, "log_tailed_relu", samples=4096,
                                generator=torch.Generator().manual_seed(8))
    b = expected_coarse_grad_at(v, 1.0, 2.0, t, "log_tailed_relu", samples=4096,
                                generator=torch.Generator().manual_seed(8))
    assert a == b and a.method == "monte_carlo" and a.radial_se > 0


def test_optimal_v_record_has_zero_grad_v():
    teacher = make_teacher(4, 2, 2, seed=1)
    v = optimal_v_at(1.0, 2.5, teacher)
    rec = point_record(v, 1.0, 2.5, teacher, "relu")
    assert rec["grad_v_norm"] < 1e-12


@pytest.mark.parametrize("ste", ["identity", "relu", "clipped_relu"])
def test_expected_coarse_descent_decreases_the_binary_population_loss(ste):
    """b = 1: ⟨E[g_μ], ∂f/∂w⟩ ≥ 0 and v moves by ∂f/∂v, so small steps never raise f."""
    from coarsegrad.theory.diagnostics import trajectory

    t = make_teacher(5, 3, 1, seed=2)
    tr = trajectory(t, ste, theta0=math.pi / 2, lr=0.05, steps=200, record_every=1)
    loss = np.array([r["loss"] for r in tr])
    assert np.diff(loss).max() <= 1e-12 and loss[-1] < 0.1 * loss[0]
    assert tr[-1]["theta"] < 0.1 * math.pi
