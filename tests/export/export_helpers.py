"""Shared builders for the export tests: models whose pre-activations are exact."""

from __future__ import annotations

import numpy as np
import torch

from coarsegrad.models.networks import MLP, TwoLayerNet
from coarsegrad.quant.spec import ActQuant

OFFSET = {"ceil": 0.0, "nearest": 0.5, "floor": 1.0}


def count_oracle(z: np.ndarray, bits: int, alpha: float, rounding: str = "ceil") -> np.ndarray:
    """c = #{j ∈ 0..L−1 : z > fl32((j + o)·fl32(α))}, one Python comparison at a time."""
    a = np.float32(alpha)
    edges = [np.float32(np.float32(j + OFFSET[rounding]) * a) for j in range((1 << bits) - 1)]
    flat = [sum(1 for e in edges if np.float32(v) > e) for v in np.asarray(z, np.float32).reshape(-1)]
    return np.array(flat, dtype=np.int64).reshape(np.shape(z))


def boundary_values(bits: int, alpha: float) -> np.ndarray:
    """0, −0, ±tiny, every edge fl(jα) and its float32 neighbours, q_max and beyond."""
    a = np.float32(alpha)
    levels = (1 << bits) - 1
    vals = [0.0, -0.0, np.float32(1e-45), -np.float32(1e-45), -1.0, 1e6, -1e6]
    for j in range(levels + 1):  # j = L gives q_max = fl(L·α)
        edge = np.float32(np.float32(j) * a)
        vals += [edge, np.nextafter(edge, np.float32(np.inf)), np.nextafter(edge, np.float32(-np.inf))]
        half = np.float32(np.float32(j + 0.5) * a)  # the nearest rounding's edges
        vals += [half, np.nextafter(half, np.float32(np.inf)), np.nextafter(half, np.float32(-np.inf))]
    return np.array(vals, dtype=np.float32)


def identity_two_layer(width: int, bits: int, alpha: float, gen: torch.Generator,
                       rounding: str = "ceil") -> TwoLayerNet:
    """TwoLayerNet with W = I (so z = x exactly, in any summation order) and a random trained V."""
    model = TwoLayerNet(width, 2, width // 2, second_layer="trained", generator=gen,
                        quant=ActQuant(bits, alpha, rounding=rounding))
    with torch.no_grad():
        model.W.copy_(torch.eye(width))
        model.V.copy_(torch.randn(2, width, generator=gen))
    return model.eval()


def identity_mlp(width: int, bits: int, alpha: float, gen: torch.Generator, rounding: str = "ceil") -> MLP:
    """MLP with fc1 = I, bias 0, no batch-norm (z = x exactly), random fc2."""
    model = MLP(width, width, 3, generator=gen, quant=ActQuant(bits, alpha, rounding=rounding))
    with torch.no_grad():
        model.fc1.weight.copy_(torch.eye(width))
        model.fc1.bias.zero_()
    return model.eval()


def boundary_inputs(bits: int, alpha: float, width: int, gen: torch.Generator) -> np.ndarray:
    """Rows of ``width`` values; every boundary value appears in every column."""
    vals = boundary_values(bits, alpha)
    rows = []
    for shift in range(width):
        perm = torch.randperm(len(vals), generator=gen).numpy()
        rows.append(np.roll(vals[perm], shift))
    cols = np.stack(rows, axis=1)  # [len(vals), width]
    return np.ascontiguousarray(cols, dtype=np.float32)


def bn_mlp(in_features: int, hidden: int, classes: int, bits: int, gen: torch.Generator,
           rounding: str = "ceil") -> MLP:
    """MLP with batch-norm whose running statistics are non-trivial (a few train-mode passes)."""
    model = MLP(in_features, hidden, classes, batchnorm=True, generator=gen,
                quant=ActQuant(bits, rounding=rounding))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(256, in_features, generator=gen) * 2 + 0.5)
    return model.eval()
