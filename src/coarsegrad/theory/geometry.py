"""The geometric condition of the orthogonal-subspace problem, tracked during training.

For class k with subspace basis B_k ∈ R^{d×s} and units u = k·m + j (j < m) of
:class:`~coarsegrad.TwoLayerNet`, let p_j = B_kᵀ w_u and u_j = p_j/‖p_j‖. The condition
(our reading of Long, Yin & Xin, arXiv 2011.11256, and its float-ReLU companion
arXiv 2002.12563) holds for class k when

    0 ∈ conv{u_1, …, u_m}  ⇔  ∃ λ ≥ 0, Σλ_j = 1, Σλ_j u_j = 0.

Decided exactly by non-negative least squares (Lawson–Hanson active set):
min_{λ ≥ 0} ‖[U; 1ᵀ]λ − [0; 1]‖ is 0 iff the system is feasible. Projections with
‖p_j‖ ≤ ``zero_tol`` have no direction and are left out (all left out: False).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from coarsegrad.errors import ConfigError
from coarsegrad.models.networks import TwoLayerNet
from coarsegrad.training.loop import History, TrainConfig, train


def hull_residual(points: ArrayLike) -> float:
    """min_{λ ≥ 0} ‖[U; 1ᵀ]λ − [0; 1]‖₂ for the rows u_j of ``points`` (0 iff 0 ∈ conv)."""
    from scipy.optimize import nnls

    U = np.asarray(points, dtype=np.float64)
    if U.ndim != 2 or U.shape[0] == 0:
        raise ConfigError("points", f"must be a non-empty [p, s] array, got shape {U.shape}")
    A = np.vstack([U.T, np.ones((1, U.shape[0]))])
    b = np.zeros(A.shape[0])
    b[-1] = 1.0
    _, residual = nnls(A, b)
    return float(residual)


def origin_in_hull(points: ArrayLike, tol: float = 1e-9) -> bool:
    """True if 0 lies in the closed convex hull of the rows of ``points`` (up to ``tol``).

    ``tol`` is relative to the largest point norm; the boundary counts as inside.
    """
    U = np.asarray(points, dtype=np.float64)
    scale = max(1.0, float(np.linalg.norm(U, axis=-1).max())) if U.size else 1.0
    return hull_residual(U / scale) <= tol


def class_directions(W: ArrayLike, bases: ArrayLike, units_per_class: int,
                     zero_tol: float = 1e-12) -> list[NDArray[np.float64]]:
    """[u_j] per class: unit directions of B_kᵀ w_u for the class's units (zeros dropped)."""
    W = np.asarray(W, dtype=np.float64)
    B = np.asarray(bases, dtype=np.float64)
    K = B.shape[0]
    if W.shape != (K * units_per_class, B.shape[1]):
        raise ConfigError("W", f"expected shape {(K * units_per_class, B.shape[1])}, got {W.shape}")
    out = []
    for k in range(K):
        proj = W[k * units_per_class:(k + 1) * units_per_class] @ B[k]  # [m, s]
        norms = np.linalg.norm(proj, axis=1)
        keep = norms > zero_tol
        out.append(proj[keep] / norms[keep, None])
    return out


def geometric_condition(W: ArrayLike, bases: ArrayLike, units_per_class: int,
                        tol: float = 1e-9) -> list[bool]:
    """Per class k: 0 ∈ conv of the class's unit weight directions projected on V_k."""
    return [bool(len(u)) and origin_in_hull(u, tol) for u in class_directions(W, bases, units_per_class)]


def log_loss_slope(steps: ArrayLike, losses: ArrayLike) -> float | None:
    """Least-squares slope of log(loss) against step; None with fewer than 2 points."""
    s = np.asarray(steps, dtype=np.float64)
    y = np.log(np.maximum(np.asarray(losses, dtype=np.float64), 1e-300))
    if s.size < 2 or np.ptp(s) == 0:
        return None
    return float(np.polyfit(s, y, 1)[0])


@dataclass
class GeometryTrace:
    """Per logged step: loss, accuracy, the condition per class; and the comparison.

    ``first_step``: first logged step where the condition holds for every class.
    ``slope_before``/``slope_after``: d log(loss)/d step over logged steps before it and
    from it on (within ``window`` logged points of it, if given). ``speedup``: the loss
    falls faster after (slope_after < slope_before), None if either slope is missing.
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    holds: list[list[bool]] = field(default_factory=list)
    first_step: int | None = None
    slope_before: float | None = None
    slope_after: float | None = None
    speedup: bool | None = None
    history: History | None = None

    def summary(self) -> dict:
        """Flat summary record (no per-step lists)."""
        h = self.history
        return {"first_step": self.first_step, "slope_before": self.slope_before,
                "slope_after": self.slope_after, "speedup": self.speedup,
                "holds_at_start": all(self.holds[0]) if self.holds else None,
                "perfect_step": h.perfect_step if h else None, "steps_run": h.steps_run if h else None,
                "final_loss": self.loss[-1] if self.loss else None,
                "final_acc": self.train_acc[-1] if self.train_acc else None}


def compare_slopes(trace: GeometryTrace, window: int | None = None) -> GeometryTrace:
    """Fill ``first_step``, the two slopes and ``speedup`` from the per-step lists."""
    idx = next((i for i, h in enumerate(trace.holds) if all(h)), None)
    trace.first_step = None if idx is None else trace.step[idx]
    if idx is None:
        return trace
    lo = 0 if window is None else max(0, idx - window)
    hi = len(trace.step) if window is None else min(len(trace.step), idx + window)
    trace.slope_before = log_loss_slope(trace.step[lo:idx + 1], trace.loss[lo:idx + 1])
    trace.slope_after = log_loss_slope(trace.step[idx:hi], trace.loss[idx:hi])
    if trace.slope_before is not None and trace.slope_after is not None:
        trace.speedup = bool(trace.slope_after < trace.slope_before)
    return trace


def track_geometry(model: TwoLayerNet, X: torch.Tensor, y: torch.Tensor, bases: ArrayLike,
                   config: TrainConfig, *, tol: float = 1e-9, window: int | None = None
                   ) -> GeometryTrace:
    """Train ``model`` with :func:`coarsegrad.training.loop` and check the condition at every log.

    The ``on_log`` callback reads ``model.W`` (the weights the logged loss was computed
    with, before that step's update).
    """
    if not isinstance(model, TwoLayerNet):
        raise ConfigError("model", "must be a TwoLayerNet")
    trace = GeometryTrace()
    m = model.units_per_class

    def on_log(record: dict) -> None:
        W = model.W.detach().to(torch.float64).cpu().numpy()
        trace.step.append(int(record["step"]))
        trace.loss.append(float(record["loss"]))
        trace.train_acc.append(float(record["train_acc"]))
        trace.holds.append(geometric_condition(W, bases, m, tol))

    trace.history = train(model, X, y, config, on_log=on_log)
    return compare_slopes(trace, window)

