"""Orthogonal-subspace classification data (our reading of the paper's data model).

K classes; class k's inputs lie in a subspace V_k of R^d of dimension s, the V_k
mutually orthogonal and randomly rotated (columns of a Haar-random orthogonal
matrix): x = B_k c with B_k ∈ R^{d×s} orthonormal and a coefficient c ∈ R^s drawn by
the data model (``kind``):

| kind       | c for class k                                   | origin in class hull | linearly separable |
| ---------- | ----------------------------------------------- | -------------------- | ------------------ |
| ``pairs``  | c ~ N(0, I_s), half drawn, half their negatives | exactly              | no                 |
| ``iid``    | c ~ N(0, I_s), every sample independent         | with high prob.      | no (w.h.p.)        |
| ``sphere`` | c = g/‖g‖, g ~ N(0, I_s) (unit norm)            | with high prob.      | no (w.h.p.)        |
| ``clusters``| c = ±μ_j + ν·N(0, I_s); n centres μ_j ~ N(0, I_s) come in ± pairs | w.h.p.  | no (w.h.p.)        |
| ``orthant``| c = |g|, g ~ N(0, I_s) (V_k's positive orthant)  | no                   | yes (control)      |

Why not separable: if 0 is in the convex hull of two classes k ≠ l, every affine
multiclass score with (w_k − w_l)·x + b_k − b_l > 0 on class k and < 0 on class l
would give b_k > b_l and b_l > b_k at x = 0. ``orthant`` is separated by w_k = B_k 1.

``bias=True`` appends a constant coordinate 1 to every x (d + 1 columns), so the
first layer gets a bias. Known risk: a unit whose bias goes below −max_i w·x_i is
off on every sample, and with μ′ = 0 on (−∞, 0] (relu, clipped_relu, log_tailed_relu)
it gets zero coarse gradient forever (a dead unit); the bias also breaks the
x/−x symmetry of ``pairs`` that makes the 1-bit ceil staircase fail.

All randomness comes from the passed ``torch.Generator``: the bases first, then the
coefficients, so ``pairs`` is bit-identical to :func:`orthogonal_subspaces`.
"""

from __future__ import annotations

import torch

from coarsegrad.config import SYNTHETIC_KINDS as KINDS
from coarsegrad.errors import ConfigError
from coarsegrad.validate import integer

CLUSTER_NOISE = 0.25
"""Default ν: the within-cluster standard deviation per coordinate (centres have ~√s norm)."""


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


def _check_sizes(num_classes: int, dim: int, subspace_dim: int, samples_per_class: int) -> None:
    _check("num_classes", num_classes, 2)
    _check("subspace_dim", subspace_dim, 1)
    _check("dim", dim, 1)
    _check("samples_per_class", samples_per_class, 2)
    if num_classes * subspace_dim > dim:
        raise ConfigError(
            "dim", f"must be >= num_classes·subspace_dim = {num_classes * subspace_dim}, got {dim}"
        )


def _coefficients(kind: str, k: int, n: int, s: int, clusters: int, noise: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Coefficients c, shape [K, n, s], float64, for the data model ``kind``."""
    if kind == "pairs":
        coef = torch.randn(k, n // 2, s, generator=generator, dtype=torch.float64)
        return torch.cat([coef, -coef], dim=1)
    if kind == "clusters":
        half = torch.randn(k, clusters // 2, s, generator=generator, dtype=torch.float64)
        centres = torch.cat([half, -half], dim=1)  # [K, n_c, s], ± pairs
        which = torch.arange(n) % clusters
        return centres[:, which] + noise * torch.randn(k, n, s, generator=generator, dtype=torch.float64)
    coef = torch.randn(k, n, s, generator=generator, dtype=torch.float64)
    if kind == "sphere":
        return coef / coef.norm(dim=-1, keepdim=True)
    if kind == "orthant":
        return coef.abs()
    return coef  # iid


def synthetic_data(
    num_classes: int,
    dim: int,
    subspace_dim: int,
    samples_per_class: int,
    *,
    kind: str = "pairs",
    bias: bool = False,
    clusters: int = 4,
    noise: float = CLUSTER_NOISE,
    generator: torch.Generator | None = None,
    return_bases: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Sample (X float32 [N, d (+1 with bias)], y int64 [N]) with N = K·samples_per_class.

    ``kind`` is one of :data:`KINDS` (module table); ``pairs`` needs an even
    ``samples_per_class``, ``clusters`` an even ``clusters`` ≥ 2 (± pairs of centres;
    sample i of a class belongs to centre i mod ``clusters``). Rows are ordered by
    class. With ``return_bases=True`` also returns the bases [K, d, s].
    """
    _check_sizes(num_classes, dim, subspace_dim, samples_per_class)
    if kind not in KINDS:
        raise ConfigError("synthetic_kind", f"unknown data model {kind!r}; valid: {', '.join(KINDS)}")
    if not isinstance(bias, bool):
        raise ConfigError("bias", f"must be true or false, got {bias!r}")
    if kind == "pairs" and samples_per_class % 2:
        raise ConfigError("samples_per_class", f"must be even (x, −x pairs), got {samples_per_class}")
    if kind == "clusters":
        _check("clusters", clusters, 2)
        if clusters % 2:
            raise ConfigError("clusters", f"must be even (± pairs of centres), got {clusters}")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < float("inf"):
            raise ConfigError("noise", f"must be a finite number >= 0, got {noise!r}")
    bases = subspace_bases(num_classes, dim, subspace_dim, generator)
    coef = _coefficients(kind, num_classes, samples_per_class, subspace_dim, clusters, noise, generator)
    x = torch.einsum("kds,kns->knd", bases, coef).reshape(-1, dim).to(torch.float32)
    if bias:
        x = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)
    y = torch.arange(num_classes).repeat_interleave(samples_per_class)
    return (x, y, bases) if return_bases else (x, y)


def orthogonal_subspaces(
    num_classes: int,
    dim: int,
    subspace_dim: int,
    samples_per_class: int,
    *,
    generator: torch.Generator | None = None,
    return_bases: bool = False,
) -> tuple[torch.Tensor, ...]:
    """The ``pairs`` model: class k has x = B_k c with c ~ N(0, I_s); half the samples
    are drawn and the other half are their negatives (samples_per_class must be even),
    so the origin lies in every class's convex hull. See :func:`synthetic_data`."""
    return synthetic_data(num_classes, dim, subspace_dim, samples_per_class, kind="pairs",
                          generator=generator, return_bases=return_bases)
