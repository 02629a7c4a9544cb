"""The paper's problem, step by step: ``coarsegrad train``'s loop against a plain PyTorch loop.

Workload: the default ``coarsegrad train --data synthetic`` config (preset ``synthetic``:
400 rows in R^40, TwoLayerNet with 80 units, fixed second layer, 2-bit staircase with the
clipped-ReLU STE, full-batch SGD, lr 1.0), ``steps`` steps without stopping at 100%.

* ``ours``: :func:`coarsegrad.training.loop.train` at the preset's ``log_every``, each
  logged record appended to a :class:`~coarsegrad.training.metrics.MetricsFile` as a run does;
* ``plain``: :func:`plain_loop`, the dozen lines anyone would write (autograd STE by the
  detach trick, ``loss.backward()``, W −= lr·∇W).

Both start from the same weights; a time is per step, the median over ``repeats``
rounds (order alternating); the ratio is the median of the per-round ratios. Measured
at each thread count in ``threads`` (``torch.set_num_threads``, restored afterwards).
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from coarsegrad.config import DataConfig, ModelConfig, load_preset
from coarsegrad.models.build import build_model
from coarsegrad.models.networks import TwoLayerNet
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.training.loop import TrainConfig, train
from coarsegrad.training.metrics import MetricsFile
from coarsegrad.training.run import build_data

GOAL = 1.2  # ours / plain per step, at the default log_every


def plain_loop(X: torch.Tensor, y: torch.Tensor, W0: torch.Tensor, V: torch.Tensor, bits: int,
               alpha: float, lr: float, steps: int) -> torch.Tensor:
    """Full-batch coarse GD on o = V·σ(Wx) in plain PyTorch; returns the final W."""
    W = W0.detach().clone().requires_grad_()
    top = 2 ** bits - 1
    for _ in range(steps):
        h = X @ W.t()
        proxy = h.clamp(0.0, top * alpha)  # clipped ReLU: μ′ = 1 on (0, q_max)
        act = proxy + (torch.clamp(torch.ceil(h / alpha), 0, top) * alpha - proxy).detach()
        loss = F.cross_entropy(act @ V.t(), y)
        W.grad = None
        loss.backward()
        with torch.no_grad():
            W -= lr * W.grad  # type: ignore[operator]
    return W.detach()


def synthetic_step_bench(steps: int = 1000, repeats: int = 5, threads: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Per-step seconds of ``ours`` and ``plain`` and their ratio, per thread count."""
    preset = load_preset("synthetic")
    data = DataConfig(**preset["data"])
    model_cfg = ModelConfig(**{**preset["model"], "rounding": "ceil"})  # the plain loop's ⌈h/α⌉
    config = dataclasses.replace(TrainConfig(**preset["train"]), steps=steps, stop_at_perfect=False)
    run_data = build_data(data, config.seed)
    X, y = run_data.x_train, run_data.y_train
    start = build_model(model_cfg, X.shape[1], run_data.num_classes, config.seed + 1)
    assert isinstance(start, TwoLayerNet) and isinstance(start.act, QuantReLU)
    alpha, W0, V = float(start.act.alpha), start.W.detach(), start.V

    def ours() -> float:
        net = build_model(model_cfg, X.shape[1], run_data.num_classes, config.seed + 1)
        with tempfile.TemporaryDirectory() as folder:
            metrics = MetricsFile(Path(folder) / "metrics.jsonl")
            began = time.perf_counter()
            train(net, X, y, config, on_log=metrics.append)
            metrics.flush()
            return (time.perf_counter() - began) / steps

    def plain() -> float:
        began = time.perf_counter()
        plain_loop(X, y, W0, V, model_cfg.bits, alpha, config.lr, steps)
        return (time.perf_counter() - began) / steps

    before = torch.get_num_threads()
    rows = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            ours(), plain()  # warm-up
            times: dict[str, list[float]] = {"ours": [], "plain": []}
            for r in range(repeats):
                for name, fn in (("ours", ours), ("plain", plain))[:: 1 if r % 2 == 0 else -1]:
                    times[name].append(fn())
            ratios = [a / b for a, b in zip(times["ours"], times["plain"], strict=True)]
            rows.append({"threads": n, "ours_ms": 1e3 * statistics.median(times["ours"]),
                         "plain_ms": 1e3 * statistics.median(times["plain"]),
                         "ratio": statistics.median(ratios), "goal": GOAL,
                         "met": statistics.median(ratios) <= GOAL})
    finally:
        torch.set_num_threads(before)
    return {"workload": "synthetic full-batch step (preset synthetic)", "steps": steps, "repeats": repeats,
            "log_every": config.log_every, "rows": rows}


def format_synthetic(result: dict[str, Any]) -> str:
    """The result as a small markdown table."""
    lines = [f"Synthetic full-batch step ({result['steps']} steps × {result['repeats']} repeats, "
             f"log_every {result['log_every']}): coarsegrad train loop vs a plain PyTorch loop",
             "", "| threads | ours ms/step | plain ms/step | ours/plain | goal |", "| --- | --- | --- | --- | --- |"]
    for row in result["rows"]:
        lines.append(f"| {row['threads']} | {row['ours_ms']:.3f} | {row['plain_ms']:.3f} | {row['ratio']:.2f} | "
                     f"<= {row['goal']} {'met' if row['met'] else 'NOT met'} |")
    return "\n".join(lines) + "\n"
