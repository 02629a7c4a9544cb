"""Exact population loss/gradients against the ICLR 2019 closed forms, Monte Carlo and FD."""

import math

import numpy as np
import pytest
import torch

from coarsegrad import ConfigError, quantized_relu
from coarsegrad.theory import closed_forms as cf
from coarsegrad.theory.montecarlo import monte_carlo, sample_loss_and_coarse_grad
from coarsegrad.theory.population import (
    Teacher,
    optimal_v_at,
    plane_frame,
    population_grad_v,
    population_grad_v_at,
    population_grad_w,
    population_grad_w_at,
    population_loss,
    population_loss_at,
)


def _random_problem(seed, m=4, n=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(m), rng.standard_normal(n), rng.standard_normal(m),
            rng.standard_normal(n))


def _w_at_angle(w_star, theta, r):
    """A w with ‖w‖ = r and angle θ to w* (in the plane of w* and the next axis)."""
    e1 = w_star / np.linalg.norm(w_star)
    e2 = np.roll(e1, 1)
    e2 -= (e2 @ e1) * e1
    e2 /= np.linalg.norm(e2)
    return r * (math.cos(theta) * e1 + math.sin(theta) * e2)


@pytest.mark.parametrize("seed", range(6))
def test_binary_alpha_one_equals_iclr_closed_forms(seed):
    v, w, vs, ws = _random_problem(seed)
    t = Teacher(vs, ws, bits=1, alpha=1.0)
    assert population_loss(v, w, t) == pytest.approx(cf.binary_loss(v, w, vs, ws), abs=1e-12)
    np.testing.assert_allclose(population_grad_v(v, w, t), cf.binary_grad_v(v, w, vs, ws), atol=1e-12)
    np.testing.assert_allclose(population_grad_w(v, w, t), cf.binary_grad_w(v, w, vs, ws), atol=1e-12)


@pytest.mark.parametrize("theta", [1e-6, 0.3, math.pi / 2, math.pi - 1e-3, math.pi - 1e-7])
def test_binary_closed_forms_near_the_singular_angles(theta):
    v, _, vs, ws = _random_problem(11)
    w = _w_at_angle(ws, theta, 0.7)
    t = Teacher(vs, ws, bits=1, alpha=1.0)
    assert plane_frame(w, ws).theta == pytest.approx(theta, abs=1e-12)
    assert population_loss(v, w, t) == pytest.approx(cf.binary_loss(v, w, vs, ws), abs=1e-10)
    np.testing.assert_allclose(population_grad_w(v, w, t), cf.binary_grad_w(v, w, vs, ws), atol=1e-10)


@pytest.mark.parametrize("bits,alpha,r", [(2, 0.6511, 1.0), (2, 0.4, 1.7), (4, 0.1946, 1.0),
                                          (4, 0.3, 0.6), (1, 1.2221, 2.0)])
def test_loss_matches_monte_carlo(bits, alpha, r):
    v, w, vs, ws = _random_problem(bits * 10 + int(10 * r))
    w = r * w / np.linalg.norm(w)
    t = Teacher(vs, ws, bits=bits, alpha=alpha)
    est = monte_carlo(v, w, t, "relu", 200_000, torch.Generator().manual_seed(bits))
    exact = population_loss(v, w, t)
    assert abs(est.loss - exact) <= 4 * est.loss_se, (est.loss, exact, est.loss_se)
    assert est.loss_se < 0.02 * exact  # the check has power


def test_the_half_factor():
    """f is ½E[(y − y*)²]: twice the exact value misses the Monte Carlo mean by far."""
    v, w, vs, ws = _random_problem(3)
    t = Teacher(vs, ws, bits=2, alpha=0.6511)
    est = monte_carlo(v, w, t, "relu", 100_000, torch.Generator().manual_seed(0))
    assert abs(2 * population_loss(v, w, t) - est.loss) > 20 * est.loss_se


@pytest.mark.parametrize("bits,alpha", [(1, 1.2221), (2, 0.6511), (4, 0.1946), (4, 0.5)])
def test_gradients_match_finite_differences(bits, alpha):
    v, w, vs, ws = _random_problem(bits + 100)
    t = Teacher(vs, ws, bits=bits, alpha=alpha)
    eps = 1e-6
    fd_w = [(population_loss(v, w + eps * e, t) - population_loss(v, w - eps * e, t)) / (2 * eps)
            for e in np.eye(w.size)]
    fd_v = [(population_loss(v + eps * e, w, t) - population_loss(v - eps * e, w, t)) / (2 * eps)
            for e in np.eye(v.size)]
    np.testing.assert_allclose(population_grad_w(v, w, t), fd_w, atol=1e-8)
    np.testing.assert_allclose(population_grad_v(v, w, t), fd_v, atol=1e-8)


def test_radius_on_a_threshold():
    """‖w‖ = kα puts a threshold at one standard deviation; formulas stay smooth there."""
    v, _, vs, ws = _random_problem(5)
    t = Teacher(vs, ws, bits=2, alpha=0.5)
    for r in (0.5, 1.0, 1.5):  # = α, 2α, 3α = q_max
        w = _w_at_angle(ws, 1.1, r)
        eps = 1e-6
        fd = (population_loss(v, w * (1 + eps), t) - population_loss(v, w * (1 - eps), t)) / (2 * eps * r)
        assert population_grad_w_at(v, r, 1.1, t)[0] == pytest.approx(fd, abs=1e-8)


def test_gradient_is_undefined_where_w_is_parallel_to_w_star():
    v, _, vs, ws = _random_problem(8)
    t = Teacher(vs, ws, bits=2, alpha=0.6511)
    with pytest.raises(ConfigError, match="w"):
        population_grad_w(v, -2.0 * ws, t)
    # The plane-frame value at θ = π is the one-sided limit θ → π⁻.
    at_pi = np.array(population_grad_w_at(v, 1.3, math.pi, t))
    near = np.array(population_grad_w_at(v, 1.3, math.pi - 1e-8, t))
    np.testing.assert_allclose(at_pi, near, atol=1e-7)
    assert abs(at_pi[1]) > 1e-3  # the angular part has a non-zero limit: a kink, not a critical point


def test_optimal_v_zeroes_grad_v_and_matches_spurious_minimiser():
    v, _, vs, ws = _random_problem(9, m=5)
    t = Teacher(vs, ws, bits=1, alpha=1.0)
    np.testing.assert_allclose(optimal_v_at(1.0, math.pi, t), cf.binary_spurious_v(vs), atol=1e-12)
    t4 = Teacher(vs, ws, bits=4, alpha=0.1946)
    v_opt = optimal_v_at(0.8, 2.0, t4)
    assert np.abs(population_grad_v_at(v_opt, 0.8, 2.0, t4)).max() < 1e-12
    assert population_loss_at(v_opt, 0.8, 2.0, t4) < population_loss_at(v_opt + 0.01 * v, 0.8, 2.0, t4)


def test_sample_function_equals_library_autograd_at_thresholds():
    """Per-sample ℓ and g_μ equal autograd through quantized_relu on rows with Z_i·w ∈ {0, kα, q}."""
    bits, alpha = 2, 0.5
    vs, v = np.array([0.3, -1.0, 0.7]), np.array([1.2, 0.4, -0.5])
    w = np.array([1.0, 0.0, 0.0])
    t = Teacher(vs, np.array([0.6, 0.8, 0.0]), bits=bits, alpha=alpha)
    pre = [[0.0, 0.5, 1.0], [1.5, -0.2, 0.25], [1.5 + 1e-12, 0.5 - 1e-12, 3.0]]  # 0, kα, q, neighbours
    Z = torch.randn(len(pre), 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    Z[:, :, 0] = torch.tensor(pre, dtype=torch.float64)
    for ste in ("identity", "relu", "clipped_relu", "log_tailed_relu"):
        loss, grad = sample_loss_and_coarse_grad(Z, v, w, t, ste)
        for i in range(len(pre)):
            wt = torch.tensor(w, requires_grad=True)
            y = quantized_relu(Z[i] @ wt, bits, alpha, ste, "ceil") @ torch.tensor(v)  # the theory's ceil
            ystar = quantized_relu(Z[i] @ torch.tensor(t.w_star), bits, alpha, ste, "ceil") @ torch.tensor(vs)
            ell = 0.5 * (y - ystar) ** 2
            ell.backward()
            assert float(loss[i]) == pytest.approx(float(ell.detach()), abs=1e-14)
            np.testing.assert_allclose(grad[i].numpy(), wt.grad.numpy(), atol=1e-14)


def test_teacher_validation():
    with pytest.raises(ConfigError, match="w_star"):
        Teacher(np.ones(2), np.zeros(3))
    with pytest.raises(ConfigError, match="bits"):
        Teacher(np.ones(2), np.ones(3), bits=0)
    with pytest.raises(ConfigError, match="theta"):
        population_loss_at(np.ones(2), 1.0, 4.0, Teacher(np.ones(2), np.ones(3)))
