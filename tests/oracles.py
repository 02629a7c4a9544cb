"""Independent NumPy oracles shared by the tests (μ′, μ, inputs at the thresholds)."""

import numpy as np


def numpy_dmu(name, x, q):
    if name == "identity":
        return np.ones_like(x)
    if name == "relu":
        return (x > 0).astype(float)
    if name == "clipped_relu":
        return ((x > 0) & (x <= q)).astype(float)
    with np.errstate(divide="ignore"):
        return np.where(x <= 0, 0.0, np.where(x <= q, 1.0, 1.0 / (x - q + 1.0)))


def numpy_mu(name, x, q):
    if name == "identity":
        return x
    if name == "relu":
        return np.maximum(x, 0)
    if name == "clipped_relu":
        return np.clip(x, 0, q)
    with np.errstate(invalid="ignore"):
        return np.where(x <= q, np.maximum(x, 0), q + np.log(np.maximum(x, q) - q + 1.0))


def boundary_inputs(bits, alpha):
    q = (2**bits - 1) * alpha
    k = np.arange(2**bits) * alpha
    eps = 1e-9
    return np.concatenate([k, k + eps, k - eps, [0.0, q, q + eps, q - eps, -3.0, 2 * q, 10 * q, 1e-300]])


OFFSETS = {"ceil": 0.0, "nearest": 0.5, "floor": 1.0}


def numpy_thresholds(bits, alpha, rounding, dtype):
    """t_j = fl((j + o)·fl(α)) in ``dtype`` (NumPy float32 or float64), j = 0..L−1."""
    dtype = np.dtype(dtype)
    m = np.arange(2**bits - 1, dtype=dtype) + dtype.type(OFFSETS[rounding])
    return m * dtype.type(alpha)


def numpy_codes(x, bits, alpha, rounding="ceil"):
    """c(x) = #{j : x > t_j}, NaN for NaN, counted by comparisons against every threshold."""
    x = np.asarray(x)
    t = numpy_thresholds(bits, alpha, rounding, x.dtype)
    c = (x[..., None] > t).sum(-1).astype(x.dtype)
    return np.where(np.isnan(x), np.nan, c).astype(x.dtype)


def numpy_staircase_formula(x, bits, alpha, rounding="ceil"):
    """σ by the textbook formula α·clip(⌈x/α − o⌉, 0, L) (right-closed steps; away from edges)."""
    return alpha * np.clip(np.ceil(x / alpha - OFFSETS[rounding]), 0, 2**bits - 1)


def numpy_weight_codes(w, kind, bits=None, granularity="layer"):
    """(codes, scales) of the weight projections written from their formulas in float64:
    binary sign (sign(0) = +1) with α = mean|w|; ternary (TWN) Δ = 0.7·mean|w|,
    α = mean |w| over |w| > Δ (0 if empty); uniform s = max|w|/M, clip(round-half-even(w/s))."""
    w = np.asarray(w)
    w64 = w.astype(np.float64)
    axis = tuple(range(1, w.ndim)) if granularity == "channel" else None
    a = np.abs(w64)
    if kind == "binary":
        codes = np.where(w64 >= 0, 1, -1)
        scale = a.mean(axis=axis, keepdims=True)
    elif kind == "ternary":
        delta = 0.7 * a.mean(axis=axis, keepdims=True)
        keep = a > delta
        count = keep.sum(axis=axis, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(count > 0, (a * keep).sum(axis=axis, keepdims=True) / count, 0.0)
        codes = np.sign(w64) * keep
    else:
        m = 2 ** (bits - 1) - 1
        scale = (a.max(axis=axis, keepdims=True) / m).astype(w.dtype).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            codes = np.where(scale > 0, np.clip(np.round(w64 / scale), -m, m), 0.0)
    scale = scale.astype(w.dtype)
    if granularity == "layer":
        scale = scale.reshape(())
    return codes.astype(np.int8), scale
