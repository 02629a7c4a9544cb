import pytest
import torch

import coarsegrad as cg


def test_shapes_and_labels(gen):
    X, y = cg.orthogonal_subspaces(4, 40, 5, 100, generator=gen)
    assert X.shape == (400, 40) and X.dtype == torch.float32
    assert y.dtype == torch.int64 and torch.equal(torch.bincount(y), torch.full((4,), 100))


def test_subspaces_are_orthogonal_and_classes_symmetric(gen):
    X, y, bases = cg.orthogonal_subspaces(3, 20, 4, 50, generator=gen, return_bases=True)
    X = X.double()
    gram = torch.einsum("kds,ldt->klst", bases, bases)
    for k in range(3):
        for l in range(3):
            expected = torch.eye(4, dtype=torch.float64) if k == l else torch.zeros(4, 4, dtype=torch.float64)
            torch.testing.assert_close(gram[k, l], expected, atol=1e-12, rtol=0)
    for k in range(3):
        xk = X[y == k]
        # every sample lies in its own subspace, orthogonal to the others'
        torch.testing.assert_close(xk @ bases[k] @ bases[k].t(), xk, atol=1e-5, rtol=0)
        for l in range(3):
            if l != k:
                assert (xk @ X[y == l].t()).abs().max() < 1e-4
        assert torch.linalg.matrix_rank(xk, atol=1e-4, rtol=0) == 4
        # x and −x both present
        torch.testing.assert_close(xk[:25], -xk[25:])


def test_same_generator_seed_same_data():
    a = cg.orthogonal_subspaces(2, 6, 3, 10, generator=torch.Generator().manual_seed(3))
    b = cg.orthogonal_subspaces(2, 6, 3, 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0])


def test_no_linear_classifier_separates_the_classes(gen):
    X, y = cg.orthogonal_subspaces(4, 40, 5, 100, generator=gen)
    linear = torch.nn.Linear(40, 4)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(X), y)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    grad_norm = sum(p.grad.norm() ** 2 for p in linear.parameters()) ** 0.5
    acc = (linear(X).argmax(1) == y).float().mean().item()
    assert grad_norm < 1e-3  # converged
    assert acc < 0.5  # symmetric classes: a linear map scores x and −x oppositely


@pytest.mark.parametrize("kwargs,field", [({"samples_per_class": 3}, "samples_per_class"),
                                          ({"dim": 10}, "dim"), ({"num_classes": 1}, "num_classes"),
                                          ({"subspace_dim": 0}, "subspace_dim")])
def test_bad_sizes(kwargs, field):
    args = {"num_classes": 4, "dim": 40, "subspace_dim": 5, "samples_per_class": 10, **kwargs}
    with pytest.raises(cg.ConfigError) as info:
        cg.orthogonal_subspaces(**args)
    assert info.value.field == field
