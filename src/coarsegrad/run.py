"""Build data and model from configs, train, and write the run record.

A run directory holds ``config.json`` (resolved config), ``env.json``,
``metrics.jsonl`` (one line per logged step: step, loss, train_acc),
``model.safetensors`` (weights, with the model config in its metadata) and
``summary.json`` (final metrics and seconds). Seeds: the data comes from
``data_seed`` (default: the training seed), the initial weights from
``seed + 1``, the batch order from ``seed``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from coarsegrad import safetensors_io
from coarsegrad.config import DataConfig, ModelConfig
from coarsegrad.models import MLP, TwoLayerNet
from coarsegrad.progress import Progress
from coarsegrad.records import append_jsonl, atomic_write_json, environment
from coarsegrad.synthetic import orthogonal_subspaces
from coarsegrad.train import History, TrainConfig, train


def build_data(config: DataConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training inputs and labels for ``config`` (the synthetic problem)."""
    data_seed = seed if config.data_seed is None else config.data_seed
    generator = torch.Generator().manual_seed(data_seed)
    return orthogonal_subspaces(config.num_classes, config.dim, config.subspace_dim,
                                config.samples_per_class, generator=generator)


def build_model(config: ModelConfig, in_features: int, num_classes: int, seed: int) -> nn.Module:
    """The network named by ``config``, initialised from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    if config.model == "two_layer":
        return TwoLayerNet(in_features, num_classes, config.units_per_class, config.bits,
                           config.alpha, config.ste, config.second_layer, config.init_scale,
                           generator=generator)
    return MLP(in_features, config.hidden, num_classes, config.bits, config.alpha, config.ste,
               config.batchnorm, generator=generator)


def resolved_config(data: DataConfig, model: ModelConfig, train_cfg: TrainConfig) -> dict:
    """The config as saved: every field explicit, alpha resolved to its value."""
    model_dict = dataclasses.asdict(model)
    if model_dict["alpha"] is None:
        from coarsegrad.quantizer import optimal_alpha
        model_dict["alpha"] = optimal_alpha(model.bits)
    return {"data": dataclasses.asdict(data), "model": model_dict, "train": dataclasses.asdict(train_cfg)}


def save_model(path: Path, model: nn.Module, config: dict) -> None:
    """Weights (and buffers) as safetensors; the resolved config as JSON metadata."""
    safetensors_io.save(path, dict(model.state_dict()), {"config": json.dumps(config, sort_keys=True)})


def run_training(data: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 out: str | Path, progress: bool = True) -> dict:
    """Train once and write the run record to ``out``; returns the summary dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = resolved_config(data, model_cfg, train_cfg)
    atomic_write_json(out / "config.json", config)
    atomic_write_json(out / "env.json", environment("cpu"))
    X, y = build_data(data, train_cfg.seed)
    model = build_model(model_cfg, X.shape[1], data.num_classes, train_cfg.seed + 1)
    metrics = out / "metrics.jsonl"
    metrics.write_text("")
    bar = Progress(train_cfg.total_steps(X.shape[0]), "train", enabled=progress)

    def on_log(record: dict) -> None:
        append_jsonl(metrics, record)
        bar.update(record["step"] + 1 - bar.count, loss=record["loss"], acc=record["train_acc"])

    history: History = train(model, X, y, train_cfg, on_log=on_log)
    bar.close()
    save_model(out / "model.safetensors", model, config)
    summary = {
        "steps": history.steps_run, "final_loss": history.loss[-1], "train_acc": history.train_acc[-1],
        "perfect_step": history.perfect_step, "seconds": history.seconds,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
