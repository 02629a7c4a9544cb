"""The synthetic data models: shapes, symmetry, determinism, and (non-)separability by LP."""

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from coarsegrad.config import DataConfig
from coarsegrad.data.synthetic import KINDS, orthogonal_subspaces, synthetic_data
from coarsegrad.errors import ConfigError

SIZES = (4, 40, 5, 100)  # the preset: K, d, s, samples per class
BOUND = 1e3  # |W|, |b| ≤ BOUND keeps the LP bounded (HiGHS otherwise reports numerical trouble)


def separable(X: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether an affine multiclass classifier argmax_k (w_k·x + b_k) gets every sample right.

    LP over (W ∈ R^{K×d}, b ∈ R^K, t): minimise t subject to
    (w_{y_i} − w_l)·x_i + b_{y_i} − b_l + t ≥ 1 for every sample i and class l ≠ y_i, t ≥ 0.
    W = 0, b = 0, t = 1 is feasible, so t* ≤ 1. If none exists, every (W, b) leaves
    some margin ≤ 0, which forces t ≥ 1, so t* = 1. If a strict separation exists it
    scales to margins ≥ 1 (finitely many strict inequalities), so t* = 0 provided that
    scaled separator fits in the box |W|, |b| ≤ BOUND (a separator needing more would
    show as 0 < t* < 1 and fail the gap assertion, not pass silently). The 0/1 gap is
    robust to LP tolerances; a plain feasibility LP and an unboxed one both hit HiGHS
    "numerical difficulties" on some of these sets. This is the multiclass (argmax)
    sense, weaker than one-vs-rest, so "not separable" is the stronger statement.
    """
    x = X.double().numpy()
    labels = y.numpy()
    n, d = x.shape
    k = int(labels.max()) + 1
    rows = []
    for i in range(n):
        yi = labels[i]
        for l in range(k):
            if l == yi:
                continue
            row = np.zeros(k * (d + 1) + 1)
            row[yi * (d + 1):yi * (d + 1) + d] -= x[i]
            row[l * (d + 1):l * (d + 1) + d] += x[i]
            row[yi * (d + 1) + d] -= 1.0
            row[l * (d + 1) + d] += 1.0
            row[-1] = -1.0
            rows.append(row)
    cost = np.zeros(k * (d + 1) + 1)
    cost[-1] = 1.0
    bounds = [(-BOUND, BOUND)] * (k * (d + 1)) + [(0.0, None)]
    result = linprog(cost, A_ub=np.array(rows), b_ub=-np.ones(len(rows)), bounds=bounds, method="highs")
    assert result.status == 0, result.message
    assert min(result.fun, 1.0 - result.fun) < 1e-6, result.fun  # the 0/1 gap
    return result.fun < 0.5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [False, True])
def test_shapes_labels_and_determinism(kind, bias):
    make = lambda seed: synthetic_data(*SIZES, kind=kind, bias=bias, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    X, y = make(5)
    assert X.shape == (400, 41 if bias else 40) and X.dtype == torch.float32
    assert torch.equal(y, torch.arange(4).repeat_interleave(100))
    X2, y2 = make(5)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    assert not torch.equal(X, make(6)[0])
    if bias:
        assert torch.equal(X[:, -1], torch.ones(400))


def test_pairs_is_the_orthogonal_subspaces_problem():
    a = orthogonal_subspaces(*SIZES, generator=torch.Generator().manual_seed(3))
    b = synthetic_data(*SIZES, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("kind", KINDS)
def test_samples_lie_in_their_class_subspace(kind, gen):
    X, y, bases = synthetic_data(3, 20, 4, 50, kind=kind, generator=gen, return_bases=True)
    X = X.double()
    for k in range(3):
        xk = X[y == k]
        torch.testing.assert_close(xk @ bases[k] @ bases[k].t(), xk, atol=1e-5, rtol=0)
        coef = xk @ bases[k]
        if kind == "sphere":
            torch.testing.assert_close(coef.norm(dim=1), torch.ones(50, dtype=torch.float64), atol=1e-6, rtol=0)
        if kind == "orthant":
            assert (coef >= -1e-6).all()
        if kind == "pairs":
            torch.testing.assert_close(xk[:25], -xk[25:])


def test_bases_come_first_so_every_kind_shares_them():
    bases = [synthetic_data(*SIZES, kind=kind, generator=torch.Generator().manual_seed(1), return_bases=True)[2]
             for kind in KINDS]
    for b in bases[1:]:
        assert torch.equal(b, bases[0])


def test_cluster_centres_come_in_plus_minus_pairs(gen):
    X, y = synthetic_data(2, 12, 3, 24, kind="clusters", clusters=6, noise=0.0, generator=gen)
    for k in range(2):
        xk = X[y == k]
        which = torch.arange(24) % 6
        for j in range(3):
            centre, opposite = xk[which == j], xk[which == j + 3]
            assert torch.equal(centre, centre[:1].expand_as(centre))  # noise 0: the centre itself
            torch.testing.assert_close(opposite, -centre)


def test_clusters_have_the_requested_spread(gen):
    X, y, bases = synthetic_data(2, 40, 5, 2000, kind="clusters", clusters=2, noise=0.25, generator=gen,
                                 return_bases=True)
    coef = X[y == 0].double() @ bases[0]
    spread = coef[0::2] - coef[0::2].mean(0)  # one cluster: every other sample
    assert abs(float(spread.std()) - 0.25) < 0.01


@pytest.mark.parametrize("kind", ["pairs", "iid", "sphere", "clusters"])
@pytest.mark.parametrize("seed", [0])
def test_class_symmetric_models_are_not_linearly_separable(kind, seed):
    X, y = synthetic_data(*SIZES, kind=kind, generator=torch.Generator().manual_seed(seed))
    assert not separable(X, y)
    Xb, yb = synthetic_data(*SIZES, kind=kind, bias=True, generator=torch.Generator().manual_seed(seed))
    assert not separable(Xb, yb)


@pytest.mark.parametrize("seed", [0, 1])
def test_orthant_control_is_linearly_separable(seed):
    X, y = synthetic_data(*SIZES, kind="orthant", generator=torch.Generator().manual_seed(seed))
    assert separable(X, y)


def test_the_lp_oracle_separates_a_hand_made_case():
    X = torch.tensor([[1.0, 0.0], [2.0, 0.1], [-1.0, 0.0], [-2.0, -0.1]])
    y = torch.tensor([0, 0, 1, 1])
    assert separable(X, y)
    assert not separable(torch.cat([X, -X]), torch.cat([y, y]))


@pytest.mark.parametrize("kwargs,field", [({"kind": "gauss"}, "synthetic_kind"), ({"kind": "clusters", "clusters": 3}, "clusters"),
                                          ({"kind": "clusters", "clusters": 0}, "clusters"), ({"bias": 1}, "bias"),
                                          ({"kind": "clusters", "noise": -1.0}, "noise")])
def test_bad_options(kwargs, field):
    with pytest.raises(ConfigError) as info:
        synthetic_data(*SIZES, **kwargs)
    assert info.value.field == field


def test_odd_samples_only_matter_for_pairs():
    synthetic_data(2, 4, 2, 5, kind="iid")
    with pytest.raises(ConfigError):
        synthetic_data(2, 4, 2, 5, kind="pairs")


@pytest.mark.parametrize("kwargs,field", [({"synthetic_kind": "x"}, "synthetic_kind"), ({"clusters": 5}, "clusters"),
                                          ({"bias": "yes"}, "bias")])
def test_data_config_validates_the_model(kwargs, field):
    with pytest.raises(ConfigError) as info:
        DataConfig(**kwargs)
    assert info.value.field == field
    assert DataConfig(synthetic_kind="iid", bias=True, clusters=6).clusters == 6
