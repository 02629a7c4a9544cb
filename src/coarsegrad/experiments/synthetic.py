"""Synthetic experiment: perfect classification over seeds for each STE × bits.

One trial = one seed of full-batch coarse gradient descent on the orthogonal-subspace
problem of ``configs/synthetic.toml``; the record keeps the curve (every logged step).
"""

from __future__ import annotations

import dataclasses
import time

from coarsegrad.config import DataConfig, ModelConfig
from coarsegrad.errors import TrainingDiverged
from coarsegrad.models.build import build_model
from coarsegrad.training.loop import TrainConfig, train
from coarsegrad.training.run import build_data

STES = ("identity", "relu", "clipped_relu", "log_tailed_relu")
BITS = (1, 2, 4)


def synthetic_trial(data: dict, model: dict, train_cfg: dict, ste: str, bits: int | None, seed: int) -> dict:
    """Train one seed; return a flat record with the curve. ``bits`` None (ste ``float``):
    the float baseline, plain ReLU."""
    data_cfg = DataConfig(**data)
    quant = {"ste": ste, "bits": bits, "act": "quant"} if bits is not None else {"act": "float"}
    model_cfg = ModelConfig(**{**model, **quant})
    tcfg = TrainConfig(**{**train_cfg, "seed": seed})
    run_data = build_data(data_cfg, seed)
    X, y = run_data.x_train, run_data.y_train
    net = build_model(model_cfg, X.shape[1], data_cfg.num_classes, seed + 1)
    started = time.perf_counter()
    try:
        history = train(net, X, y, tcfg)
        diverged = None
        final_loss, train_acc = history.final_loss, history.final_acc
        every = -(-len(history.step) // 100)  # keep records small: at most 100 points
        curve = {"step": history.step[::every], "loss": [float(f"{v:.6g}") for v in history.loss[::every]],
                 "train_acc": history.train_acc[::every]}
        steps, perfect = history.steps_run, history.perfect_step
    except TrainingDiverged as exc:
        diverged, final_loss, train_acc, curve, steps, perfect = exc.step, float("nan"), 0.0, None, exc.step, None
    return {
        "experiment": "synthetic", "dataset": "synthetic", "model": "two_layer",
        "ste": ste, "bits": bits, "seed": seed, "alpha": model_cfg.act_quant().alpha if bits is not None else None,
        "units_per_class": model_cfg.units_per_class, "lr": tcfg.lr,
        "train_acc": train_acc, "test_acc": None, "final_loss": final_loss,
        "perfect": perfect is not None, "perfect_step": perfect, "diverged_step": diverged,
        "epochs": steps, "steps": steps, "seconds": time.perf_counter() - started,
        "device": "cpu", "curve": curve,
        "config": {"data": dataclasses.asdict(data_cfg), "model": dataclasses.asdict(model_cfg),
                   "train": dataclasses.asdict(tcfg)},
    }
