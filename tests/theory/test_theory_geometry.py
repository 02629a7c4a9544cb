"""Origin-in-convex-hull test against known point sets, an angular-gap oracle and SciPy's LP."""

import math

import numpy as np
import pytest
import torch

from coarsegrad import ConfigError, TrainConfig, TwoLayerNet, orthogonal_subspaces
from coarsegrad.theory.geometry import (
    GeometryTrace,
    class_directions,
    compare_slopes,
    geometric_condition,
    hull_residual,
    log_loss_slope,
    origin_in_hull,
    track_geometry,
)

pytest.importorskip("scipy")
from scipy.optimize import linprog  # noqa: E402


def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def _gap_oracle(points):
    """2-D: 0 ∈ conv of non-zero points iff the largest angular gap between them is ≤ π."""
    ang = np.sort(np.arctan2(points[:, 1], points[:, 0]))
    gaps = np.diff(np.concatenate([ang, ang[:1] + 2 * math.pi]))
    return gaps.max(), bool(gaps.max() <= math.pi)


def _lp_oracle(points):
    """Feasibility of λ ≥ 0, Σλ = 1, Uᵀλ = 0 by SciPy's HiGHS LP."""
    p = len(points)
    A = np.vstack([points.T, np.ones((1, p))])
    b = np.zeros(A.shape[0])
    b[-1] = 1
    return linprog(np.zeros(p), A_eq=A, b_eq=b, bounds=[(0, None)] * p, method="highs").status == 0


KNOWN = [
    ("square", [[1, 0], [0, 1], [-1, 0], [0, -1]], True),
    ("three at 120°", [_unit(90), _unit(210), _unit(330)], True),
    ("open half plane", [_unit(10), _unit(80), _unit(170)], False),
    ("antipodal pair (segment through 0)", [[1, 0], [-1, 0]], True),
    ("0 on an edge of the hull", [[1, 0], [-1, 0], [0, 1]], True),
    ("one point", [[0.6, 0.8]], False),
    ("same point twice", [[0.6, 0.8], [0.6, 0.8]], False),
    ("collinear, one side", [[1, 0], [2, 0], [0.5, 0]], False),
    ("gap exactly π (closed half plane)", [_unit(0), _unit(90), _unit(180)], True),
    ("tetrahedron", [[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], True),
    ("3-D, points on a great circle around 0", [[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], True),
    ("3-D, open half space", [[1, 0, 0.1], [0, 1, 0.1], [-1, 0, 0.1], [0, -1, 0.1]], False),
    ("3-D, origin on a face", [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, 0, 1]], True),
]


@pytest.mark.parametrize("name,points,inside", KNOWN, ids=[k[0] for k in KNOWN])
def test_known_point_sets(name, points, inside):
    P = np.array(points, dtype=float)
    P = P / np.linalg.norm(P, axis=1, keepdims=True)
    assert origin_in_hull(P) is inside
    assert _lp_oracle(P) is inside


def test_random_planar_sets_match_the_angular_gap_oracle():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        p = int(rng.integers(2, 7))
        ang = rng.uniform(0, 2 * math.pi, size=p)
        P = np.stack([np.cos(ang), np.sin(ang)], 1)
        gap, inside = _gap_oracle(P)
        if abs(gap - math.pi) < 1e-6:
            continue  # too close to the boundary for either method to be meaningful
        assert origin_in_hull(P) is inside
        checked += 1
    assert checked > 250


def test_random_sets_match_linear_programming():
    rng = np.random.default_rng(1)
    outcomes = set()
    for _ in range(80):
        s, p = int(rng.integers(2, 5)), int(rng.integers(2, 9))
        P = rng.standard_normal((p, s)) + rng.uniform(0, 1.5) * np.eye(s)[0]  # a drift makes both outcomes common
        P /= np.linalg.norm(P, axis=1, keepdims=True)
        want = _lp_oracle(P)
        if want or hull_residual(P) > 1e-6:  # skip near-boundary infeasible cases
            assert origin_in_hull(P) is want
            outcomes.add(want)
    assert outcomes == {True, False}


def test_class_directions_and_condition_on_constructed_weights():
    K, m, d, s = 2, 3, 6, 2
    B = np.zeros((K, d, s))
    B[0, 0, 0] = B[0, 1, 1] = 1.0
    B[1, 2, 0] = B[1, 3, 1] = 1.0
    W = np.zeros((K * m, d))
    W[0, :2], W[1, :2], W[2, :2] = _unit(90), _unit(210), _unit(330)  # class 0 surrounds 0
    W[3, 2:4], W[4, 2:4] = _unit(10), _unit(60)  # class 1: two directions in a half plane
    W[5, 4] = 1.0  # class 1 unit with no component in V_1: dropped
    W[3:, :2] = 5.0  # components outside the class subspace do not matter
    dirs = class_directions(W, B, m)
    assert [len(u) for u in dirs] == [3, 2]
    np.testing.assert_allclose(np.linalg.norm(dirs[1], axis=1), 1.0)
    assert geometric_condition(W, B, m) == [True, False]
    W[5, 2:4] = _unit(200)  # now class 1 surrounds 0 too
    assert geometric_condition(W, B, m) == [True, True]
    with pytest.raises(ConfigError, match="W"):
        class_directions(W[:-1], B, m)


def test_log_loss_slope_recovers_an_exponential_rate():
    steps = np.arange(50)
    assert log_loss_slope(steps, 3.0 * np.exp(-0.07 * steps)) == pytest.approx(-0.07, rel=1e-10)
    assert log_loss_slope([4], [1.0]) is None


def test_compare_slopes_on_a_constructed_trace():
    steps = list(range(40))
    loss = [math.exp(-0.01 * t) if t < 20 else math.exp(-0.2 - 0.1 * (t - 20)) for t in steps]
    holds = [[t >= 20, True] for t in steps]
    trace = compare_slopes(GeometryTrace(step=steps, loss=loss, train_acc=[0.5] * 40, holds=holds))
    assert trace.first_step == 20
    assert trace.slope_before == pytest.approx(-0.01, rel=1e-9)
    assert trace.slope_after == pytest.approx(-0.1, rel=1e-9)
    assert trace.speedup is True
    never = compare_slopes(GeometryTrace(step=steps, loss=loss, train_acc=[0.5] * 40,
                                         holds=[[False, True]] * 40))
    assert never.first_step is None and never.speedup is None


def test_track_geometry_during_training():
    gen = torch.Generator().manual_seed(0)
    X, y, B = orthogonal_subspaces(3, 12, 2, 50, generator=gen, return_bases=True)
    model = TwoLayerNet(12, 3, 4, bits=4, ste="clipped_relu", generator=gen)
    W0 = model.W.detach().double().numpy().copy()
    trace = track_geometry(model, X, y, B, TrainConfig(lr=3.0, steps=40, seed=0, stop_at_perfect=False))
    assert trace.step == trace.history.step and len(trace.holds) == len(trace.step)
    assert all(len(h) == 3 for h in trace.holds)
    first = next(s for s, h in zip(trace.step, trace.holds, strict=False) if all(h))
    assert trace.first_step == first
    # Logged values belong to the weights before that step's update (step 0: the initial W).
    assert trace.holds[0] == geometric_condition(W0, B, 4)
    assert not all(trace.holds[0]) and all(trace.holds[-1])  # this seed reaches the condition
    assert not np.allclose(model.W.detach().double().numpy(), W0)
    with pytest.raises(ConfigError, match="model"):
        track_geometry(torch.nn.Linear(2, 2), X, y, B, TrainConfig(steps=1))
