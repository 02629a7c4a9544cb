"""Train a run in the coordinates of its rows' subspace (:mod:`coarsegrad.training.batched`).

When the rows of X [N, d] lie in an r < d dimensional subspace with orthonormal basis
Q [d, r], every gradient Σ_n dh_n x_n of a linear first layer lies in it, and
h = W x = (WQ)(Qᵀx) for every row. So training W on X equals training Ŵ = WQ on
X̂ = XQ, with W = W₀ + (Ŵ − Ŵ₀)Qᵀ at any time: the same trajectory up to rounding,
products narrower by d/r.
"""

from __future__ import annotations

import torch


def row_basis(X: torch.Tensor) -> torch.Tensor | None:
    """Q [d, r] with orthonormal columns spanning the rows of X [N, d] up to rounding, when
    r < d; else None. r is the numerical rank (singular values above σ₁·max(N, d)·ε, as
    ``numpy.linalg.matrix_rank``), and Q is used only when every row's residual
    ‖x − QQᵀx‖ is at most d·ε·max‖x‖: dropping it then moves a pre-activation w·x by no
    more than the rounding bound of the length-d dot product itself (ε of X's dtype;
    SVD in float64)."""
    n, d = X.shape
    if n == 0 or d < 2 or not bool(torch.isfinite(X).all()):
        return None
    X64 = X.double()
    _, sv, vh = torch.linalg.svd(X64, full_matrices=False)
    eps = torch.finfo(X.dtype).eps
    r = int((sv > sv[0] * max(n, d) * eps).sum())
    if r == 0 or r >= d:
        return None
    Q = vh[:r].t()
    residual = (X64 - X64 @ Q @ Q.t()).norm(dim=1).amax()
    return Q if float(residual) <= d * eps * float(X64.norm(dim=1).amax()) else None


class Subspaces:
    """Each run's coordinates: its :func:`row_basis` Q (or None: all d), its width, X̂ = XQ
    and Ŵ₀ = W₀Q in X's dtype, and the map back, W = W₀ + (Ŵ − Ŵ₀)Qᵀ (W₀ itself for a run
    that never moved). A run's basis depends on its own X only, so its trajectory does not
    depend on the runs batched with it."""

    def __init__(self, X: torch.Tensor, W0: torch.Tensor, mirrored: list[bool], num_classes: int) -> None:
        self.X, self.W0, self.mirrored, self.classes = X, W0, mirrored, num_classes
        self.bases = [row_basis(x) for x in X]
        self.width = [X.shape[2] if q is None else q.shape[1] for q in self.bases]

    def _w0hat(self, run: int, q: torch.Tensor) -> torch.Tensor:
        """Ŵ₀ = W₀Q of ``run`` in W₀'s dtype."""
        return (self.W0[run].double() @ q).to(self.W0.dtype)

    def inputs(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(X, W₀) for the runs of this width, in their coordinates ([R, N, width], [R, H, width];
        rows of other runs are zeros, never read). A mirrored run's second halves are set to
        exactly minus its first (the product may round x and −x differently)."""
        if width == self.X.shape[2]:
            return self.X, self.W0
        runs, n, _ = self.X.shape
        Xw = self.X.new_zeros(runs, n, width)
        Ww = self.W0.new_zeros(runs, self.W0.shape[1], width)
        for r, q in enumerate(self.bases):
            if q is not None and q.shape[1] == width:
                Xw[r] = (self.X[r].double() @ q).to(self.X.dtype)
                Ww[r] = self._w0hat(r, q)
                if self.mirrored[r]:
                    v = Xw[r].view(self.classes, 2, n // (2 * self.classes), width)
                    torch.neg(v[:, 0], out=v[:, 1])
        return Xw, Ww

    def __call__(self, run: int, w: torch.Tensor) -> torch.Tensor:
        """Run ``run``'s weights [H, d] from its weights ``w`` in its coordinates."""
        q = self.bases[run]
        if q is None:
            return w
        return (self.W0[run].double() + (w.double() - self._w0hat(run, q).double()) @ q.t()).to(self.W0.dtype)
