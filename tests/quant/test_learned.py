"""LSQ and PACT against NumPy oracles, on inputs at and around every threshold."""

import math

import numpy as np
import pytest
import torch

from coarsegrad.errors import ConfigError
from coarsegrad.quant.learned import lsq_grad_scale, lsq_quantize, pact_quantize


def numpy_lsq(x, s, qn, qp, g):
    """Esser et al. 2020, Eq. 1-3 (np.round rounds half to even, as torch.round)."""
    v = x / s
    y = s * np.clip(np.round(v), qn, qp)
    dx = ((v >= qn) & (v <= qp)).astype(float)
    ds = np.where(v <= qn, qn, np.where(v >= qp, qp, np.round(v) - v)) * g
    return y, dx, ds


def numpy_pact(x, a, levels):
    """Choi et al. 2018, Eq. 1-3."""
    y = np.clip(x, 0, a)
    yq = np.round(y * (levels / a)) * (a / levels)
    return yq, ((x > 0) & (x < a)).astype(float), (x >= a).astype(float)


def lsq_inputs(s, qn, qp):
    """x/s at every integer, every k + ½ (both parities), qn, qp and just beyond them."""
    k = np.arange(qn - 2, qp + 3, dtype=float)
    v = np.concatenate([k, k + 0.5, k + 0.25, [qn - 1e-9, qp + 1e-9, qn + 1e-9, qp - 1e-9]])
    return v * s


@pytest.mark.parametrize("qn,qp", [(0, 3), (0, 15), (-2, 1), (-8, 7), (-1, 1)])
@pytest.mark.parametrize("s", [0.5, 0.25, 2.0])
def test_lsq_forward_and_gradients_match_oracle(qn, qp, s, gen):
    x_np = lsq_inputs(s, qn, qp)
    g = lsq_grad_scale(x_np.size, qp)
    x = torch.tensor(x_np, dtype=torch.float64, requires_grad=True)
    step = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    up = torch.randn(x.shape, dtype=torch.float64, generator=gen)
    y = lsq_quantize(x, step, qn, qp, g)
    y.backward(up)
    y_o, dx_o, ds_o = numpy_lsq(x_np, s, qn, qp, g)
    np.testing.assert_array_equal(y.detach().numpy(), y_o)
    np.testing.assert_array_equal(x.grad.numpy(), up.numpy() * dx_o)
    np.testing.assert_allclose(step.grad.item(), float(np.sum(up.numpy() * ds_o)), rtol=1e-12)


def test_lsq_ties_round_half_to_even_and_boundaries():
    """Hand-computed values: x/s = 0.5 → 0, 1.5 → 2, 2.5 → 2; at q_p the step gradient is q_p."""
    x = torch.tensor([0.5, 1.5, 2.5, 3.0, 3.5, 0.0, -0.5], dtype=torch.float64, requires_grad=True)
    step = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    y = lsq_quantize(x, step, 0, 3, 1.0)
    assert y.tolist() == [0.0, 2.0, 2.0, 3.0, 3.0, 0.0, 0.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    # ⌊v⌉ − v inside: −0.5, +0.5, −0.5; q_p = 3 at v = 3 and 3.5; q_n = 0 at v = 0 and −0.5
    assert step.grad.item() == -0.5 + 0.5 - 0.5 + 3 + 3 + 0 + 0


def test_lsq_per_channel_step_sums_over_broadcast_dims(gen):
    w = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    s_np = np.array([[0.25], [0.5], [0.125], [1.0]])
    step = torch.tensor(s_np, requires_grad=True)
    x = w.clone().requires_grad_(True)
    up = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    g = lsq_grad_scale(6, 1)
    y = lsq_quantize(x, step, -2, 1, g)
    y.backward(up)
    y_o, dx_o, ds_o = numpy_lsq(w.numpy(), s_np, -2, 1, g)
    np.testing.assert_array_equal(y.detach().numpy(), y_o)
    np.testing.assert_array_equal(x.grad.numpy(), up.numpy() * dx_o)
    np.testing.assert_allclose(step.grad.numpy(), (up.numpy() * ds_o).sum(axis=1, keepdims=True), rtol=1e-12)


def test_lsq_gradients_are_autograd_of_the_smooth_surrogate(gen):
    """Inside (q_n, q_p), away from ties, LSQ's rule is autograd of s·(x/s + r) with the
    rounding offset r = ⌊v⌉ − v held fixed (rounding passed straight through)."""
    v = torch.rand(40, dtype=torch.float64, generator=gen) * 2.4 + 0.3  # in (0.3, 2.7) ⊂ (q_n, q_p)
    v = v[(v - torch.round(v)).abs() < 0.45]  # away from the ties k + ½
    step = torch.tensor(0.75, dtype=torch.float64, requires_grad=True)
    x = (v * 0.75).requires_grad_(True)
    offset = (torch.round(x / step) - x / step).detach()
    y = lsq_quantize(x, step, 0, 3, 1.0)
    smooth = step * (x / step + offset)
    torch.testing.assert_close(y, smooth, rtol=0, atol=1e-12)
    up = torch.randn(x.shape, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(torch.autograd.grad(y, (x, step), up), torch.autograd.grad(smooth, (x, step), up))
    torch.autograd.gradcheck(lambda s: s * (x.detach() / s + offset), (step,))


def test_lsq_grad_scale_and_bad_bounds():
    assert lsq_grad_scale(100, 3) == 1 / math.sqrt(300)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="numel"):
            lsq_grad_scale(bad, 3)
    with pytest.raises(ConfigError, match="qp"):
        lsq_grad_scale(10, 0)
    with pytest.raises(ConfigError, match="qp"):
        lsq_quantize(torch.ones(2), torch.tensor(1.0), 3, 3, 1.0)
    with pytest.raises(ConfigError, match="qn"):
        lsq_quantize(torch.ones(2), torch.tensor(1.0), 0.5, 3, 1.0)


@pytest.mark.parametrize("levels", [1, 3, 15])
@pytest.mark.parametrize("a", [1.5, 2.0, 6.0])
def test_pact_forward_and_gradients_match_oracle(levels, a, gen):
    alpha = a / levels
    k = np.arange(-1, levels + 2) * alpha
    x_np = np.concatenate([k, k + alpha / 2, k + alpha / 3, [0.0, a, a + 1e-9, a - 1e-9, -1e-9, 1e-9]])
    x = torch.tensor(x_np, requires_grad=True, dtype=torch.float64)
    clip = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    up = torch.randn(x.shape, dtype=torch.float64, generator=gen)
    y = pact_quantize(x, clip, levels)
    y.backward(up)
    y_o, dx_o, da_o = numpy_pact(x_np, a, levels)
    np.testing.assert_array_equal(y.detach().numpy(), y_o)
    np.testing.assert_array_equal(x.grad.numpy(), up.numpy() * dx_o)
    np.testing.assert_allclose(clip.grad.item(), float(np.sum(up.numpy() * da_o)), rtol=1e-12)


def test_pact_hand_values_at_zero_and_a():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.9, 3.0, 4.0], dtype=torch.float64, requires_grad=True)
    a = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    y = pact_quantize(x, a, 3)
    assert y.tolist() == [0.0, 0.0, 1.0, 3.0, 3.0, 3.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert a.grad.item() == 2.0


def test_pact_matches_clip_autograd_where_smooth(gen):
    """Away from 0 and a, ∂y_q/∂x and ∂y_q/∂a equal autograd of the unrounded clip(x, 0, a)."""
    x = (torch.randn(50, dtype=torch.float64, generator=gen) * 3).requires_grad_(True)
    a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    assert ((x - 2.0).abs().min() > 1e-6) and (x.abs().min() > 1e-6)
    gx, ga = torch.autograd.grad(pact_quantize(x, a, 3).sum(), (x, a))
    sx, sa = torch.autograd.grad(torch.minimum(x.clamp(min=0), a).sum(), (x, a))
    torch.testing.assert_close(gx, sx)
    torch.testing.assert_close(ga, sa)
    torch.autograd.gradcheck(lambda a: torch.minimum(x.detach().clamp(min=0), a), (a,))
