"""row_basis and Subspaces against closed forms: exact ranks, the residual guard, the map back."""

import torch

from coarsegrad.training.subspace import Subspaces, row_basis


def low_rank(n, d, r, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    B = torch.linalg.qr(torch.randn(d, r, dtype=dtype, generator=gen)).Q
    return torch.randn(n, r, dtype=dtype, generator=gen) @ B.t(), B


def test_rank_and_span_of_low_rank_rows():
    X, B = low_rank(50, 12, 4, 0)
    Q = row_basis(X)
    assert Q is not None and Q.shape == (12, 4)
    torch.testing.assert_close(Q.t() @ Q, torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(Q @ Q.t(), B @ B.t(), atol=1e-12, rtol=0)  # the same subspace


def test_full_rank_zero_and_non_finite_rows_are_not_reduced():
    gen = torch.Generator().manual_seed(1)
    assert row_basis(torch.randn(50, 12, generator=gen)) is None
    assert row_basis(torch.zeros(5, 3)) is None
    assert row_basis(torch.tensor([[1.0, float("nan")], [0.0, 1.0]])) is None
    assert row_basis(torch.zeros(0, 3)) is None


def test_a_residual_above_the_dot_product_rounding_keeps_all_coordinates():
    X, _ = low_rank(50, 12, 4, 2, torch.float32)
    assert row_basis(X) is not None  # float32 rounding of exact low-rank rows: reduced
    # one row leaves the subspace: by 1e-4·max‖x‖ the singular value cut σ₁·max(N, d)·ε
    # (≈ 4.6e-5 here) sees a fifth direction; by 1e-5 it does not, the residual (above
    # d·ε ≈ 1.4e-6 relative) is then refused by the check
    direction = torch.nn.functional.normalize(torch.randn(12, generator=torch.Generator().manual_seed(3)), dim=0)
    scale = X.norm(dim=1).max()
    noisy = X.clone()
    noisy[0] += 1e-4 * scale * direction
    assert row_basis(noisy).shape == (12, 5)
    tiny = X.clone()
    tiny[0] += 1e-5 * scale * direction
    assert row_basis(tiny) is None


def test_weights_map_back_exactly_and_mirrored_halves_stay_negated():
    Xa, _ = low_rank(8, 6, 2, 5)
    X = torch.stack([torch.cat([Xa[:2], -Xa[:2], Xa[2:4], -Xa[2:4]]), torch.randn(8, 6, dtype=torch.float64)])
    W0 = torch.randn(2, 4, 6, dtype=torch.float64)
    sub = Subspaces(X, W0, [True, False], num_classes=2)
    assert sub.width == [2, 6]
    Xw, Ww = sub.inputs(2)
    v = Xw[0].view(2, 2, 2, 2)
    assert torch.equal(v[:, 1], -v[:, 0])
    assert torch.equal(sub(0, Ww[0]), W0[0])  # a run that never moved: W₀ itself
    moved = Ww[0] + 1.0
    Q = sub.bases[0]
    torch.testing.assert_close(sub(0, moved), W0[0] + torch.ones(4, 2, dtype=torch.float64) @ Q.t(), atol=1e-12, rtol=0)
    assert sub.inputs(6)[0] is X and torch.equal(sub(1, W0[1]), W0[1])  # full width: untouched
