"""Orthogonal-subspace classification data (our reading of the paper's data model).

K classes; class k's inputs lie in a subspace V_k of R^d of dimension s, the V_k
mutually orthogonal and randomly rotated (columns of a Haar-random orthogonal
matrix). Each class is symmetric: samples come in pairs x, −x, so the origin lies in
every class's convex hull and no linear classifier separates the classes.
"""

from __future__ import annotations

import torch

from coarsegrad.errors import ConfigError
from coarsegrad.validate import integer


def _check(name: str, value: object, minimum: int) -> int:
    return integer(name, value, lo=minimum)


def random_orthogonal(dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Haar-distributed orthogonal matrix (QR of a Gaussian matrix with sign fix), float64."""
    a = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r))


def subspace_bases(
    num_classes: int, dim: int, subspace_dim: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Orthonormal bases B[k] ∈ R^{d×s} of the class subspaces, shape [K, d, s], float64."""
    q = random_orthogonal(dim, generator)[:, : num_classes * subspace_dim]
    return q.reshape(dim, num_classes, subspace_dim).permute(1, 0, 2).contiguous()


def orthogonal_subspaces(
    num_classes: int,
    dim: int,
    subspace_dim: int,
    samples_per_class: int,
    *,
    generator: torch.Generator | None = None,
    return_bases: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Sample (X float32 [N, dim], y int64 [N]) with N = K·samples_per_class.

    Class k: x = B_k c with c ~ N(0, I_s); half the samples are drawn and the other
    half are their negatives (samples_per_class must be even). Rows are ordered by
    class. With ``return_bases=True`` also returns the bases [K, dim, s].
    """
    _check("num_classes", num_classes, 2)
    _check("subspace_dim", subspace_dim, 1)
    _check("dim", dim, 1)
    _check("samples_per_class", samples_per_class, 2)
    if samples_per_class % 2:
        raise ConfigError("samples_per_class", f"must be even (x, −x pairs), got {samples_per_class}")
    if num_classes * subspace_dim > dim:
        raise ConfigError(
            "dim", f"must be >= num_classes·subspace_dim = {num_classes * subspace_dim}, got {dim}"
        )
    bases = subspace_bases(num_classes, dim, subspace_dim, generator)
    half = samples_per_class // 2
    coef = torch.randn(num_classes, half, subspace_dim, generator=generator, dtype=torch.float64)
    coef = torch.cat([coef, -coef], dim=1)  # [K, n, s]
    x = torch.einsum("kds,kns->knd", bases, coef).reshape(-1, dim).to(torch.float32)
    y = torch.arange(num_classes).repeat_interleave(samples_per_class)
    return (x, y, bases) if return_bases else (x, y)
