"""Checks that a pair (X, y) is a usable training set."""

from __future__ import annotations

import torch

from coarsegrad.errors import DataError


def check_data(X: torch.Tensor, y: torch.Tensor) -> None:
    """Raise :class:`DataError` naming ``X`` or ``y`` unless they form a usable training set."""
    if not isinstance(X, torch.Tensor) or not X.is_floating_point():
        raise DataError("X", "must be a floating-point tensor")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
        raise DataError("y", "must be a 1-D int64 tensor of class indices")
    if X.dim() < 2 or X.shape[0] == 0:
        raise DataError("X", f"must have shape [N, ...] with N >= 1, got {tuple(X.shape)}")
    if X.shape[0] != y.shape[0]:
        raise DataError("y", f"has {y.shape[0]} labels for {X.shape[0]} rows of X")
    # a finite sum proves every entry finite (NaN and ±inf survive any summation order)
    # in one read of X; only an overflowing sum needs the elementwise test
    if not torch.isfinite(X.sum()) and not torch.isfinite(X).all():
        raise DataError("X", "contains NaN or infinite values")
    if int(y.min()) < 0:
        raise DataError("y", f"labels must be >= 0, got {int(y.min())}")
