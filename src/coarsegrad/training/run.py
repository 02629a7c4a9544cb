"""Build data and model from configs, train, and write the run record.

A run directory holds ``config.json`` (resolved config), ``env.json``,
``metrics.jsonl`` (one line per logged step: step, loss, train_acc, lr; written in
batches, see :mod:`coarsegrad.training.metrics`), ``model.safetensors`` (weights, with
the model config in its metadata) and ``summary.json`` (:data:`SUMMARY_KEYS`: the final
weights evaluated once on the whole training split and the test split, status
``completed`` | ``interrupted`` | ``diverged``); while a run with ``checkpoint_every`` is
in progress, or after it was interrupted, also ``checkpoint.safetensors`` (a
:class:`~coarsegrad.training.state.TrainState`, removed when the run completes). Seeds: the data comes from
``data_seed`` (default: the training seed), the initial weights from
``seed + 1``, the batch order from ``seed``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from coarsegrad.config import DataConfig, ModelConfig, saved_model_fields
from coarsegrad.data.datasets import NUM_CLASSES
from coarsegrad.data.splits import prepare_dataset
from coarsegrad.data.synthetic import synthetic_data
from coarsegrad.errors import ConfigError, TrainingDiverged
from coarsegrad.io import tensorfile
from coarsegrad.io.progress import Progress
from coarsegrad.io.records import atomic_write_json, environment, make_dir, remove_stale_temporaries
from coarsegrad.io.results import RunSummary, read_record, write_record
from coarsegrad.models.build import LENET_FEATURES, build_model, check_size
from coarsegrad.training.loop import History, TrainConfig, evaluate, train
from coarsegrad.training.metrics import MetricsFile, TensorBoardLog
from coarsegrad.training.state import CHECKPOINT_NAME, TrainState, load_train_state, save_train_state, truncate_metrics


def check_device(device: str) -> str:
    """``device`` if it is ``cpu`` or an available CUDA device, else ``ConfigError('device')``."""
    if not isinstance(device, str) or device != "cpu" and not (device == "cuda" or device.startswith("cuda:")):
        raise ConfigError("device", f"must be cpu or cuda, got {device!r}")
    if device != "cpu" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA is not available on this machine")
    return device


@dataclass
class RunData:
    """Training split, optional test split, and what the record keeps of the data."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    num_classes: int
    record: dict[str, Any]


def build_data(config: DataConfig, seed: int, device: str = "cpu") -> RunData:
    """The data named by ``config``: the synthetic problem (no test split) or an image dataset."""
    if config.data != "synthetic":
        splits = prepare_dataset(config.data, config.data_dir, device=device)
        return RunData(splits.x_train, splits.y_train, splits.x_test, splits.y_test,
                       splits.num_classes, splits.record())
    data_seed = seed if config.data_seed is None else config.data_seed
    generator = torch.Generator().manual_seed(data_seed)
    X, y = synthetic_data(config.num_classes, config.dim, config.subspace_dim, config.samples_per_class,
                          kind=config.synthetic_kind, bias=config.bias, clusters=config.clusters,
                          generator=generator)
    return RunData(X.to(device), y.to(device), None, None, config.num_classes,
                   {"name": "synthetic", "data_seed": data_seed})


def resolved_config(data: DataConfig, model: ModelConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    """The config as saved: every field explicit, alpha resolved to its value."""
    model_dict = dataclasses.asdict(model)
    if model_dict["alpha"] is None and model.act == "quant":
        model_dict["alpha"] = model.act_quant().alpha
    return {"data": dataclasses.asdict(data), "model": model_dict, "train": dataclasses.asdict(train_cfg)}


def save_model(path: Path, model: nn.Module, config: dict[str, Any]) -> None:
    """Weights (and buffers) as safetensors; the resolved config as JSON metadata."""
    tensorfile.save(path, dict(model.state_dict()), {"config": json.dumps(config, sort_keys=True)})


def load_run_config(out: str | Path) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """The configs saved in ``out/config.json`` (:class:`ConfigError` if missing or invalid)."""
    path = Path(out) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        model = ModelConfig(**saved_model_fields(config["model"]))  # a run before the rounding field: ceil
        return DataConfig(**config["data"]), model, TrainConfig(**config["train"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError("resume", f"{path} is not a run config ({exc})") from None


def _resume_state(out: Path, config: dict[str, Any]) -> TrainState | RunSummary | None:
    """The checkpoint to resume from, the summary of a completed run, or None (start afresh:
    a run stopped before its first checkpoint)."""
    if not (out / "config.json").is_file():
        return None
    try:  # re-resolved, so a record written before a field existed compares with its default
        saved = json.loads(json.dumps(resolved_config(*load_run_config(out))))
    except ConfigError:
        return None
    if saved != json.loads(json.dumps(config)):
        raise ConfigError("resume", f"{out}/config.json differs from the requested config")
    summary = None
    if (out / "summary.json").is_file() and (out / "model.safetensors").is_file():
        try:
            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            summary = None
    if isinstance(summary, dict) and summary.get("status", "completed") == "completed":
        (out / CHECKPOINT_NAME).unlink(missing_ok=True)
        return read_record(out / "summary.json", RunSummary)
    if (out / CHECKPOINT_NAME).is_file():
        return load_train_state(out / CHECKPOINT_NAME)
    return None


def make_summary(status: str, history: History | None, run_data: RunData, model: nn.Module | None,
                 resumed_from: int | None, chunk_size: int = 8192,
                 diverged: TrainingDiverged | None = None) -> RunSummary:
    """The run's :class:`RunSummary`: the final weights evaluated on the whole training split
    (and the test split when there is one); no metrics for a diverged run."""
    summary = RunSummary(steps=0, data=run_data.record, status=status, resumed_from_step=resumed_from)
    if history is not None:
        summary.steps, summary.perfect_step, summary.seconds = history.steps_run, history.perfect_step, history.seconds
    if diverged is not None:
        summary.steps, summary.diverged_step, summary.diverged_parameter = diverged.step, diverged.step, diverged.parameter
        return summary
    if model is None:
        return summary
    if history is not None and history.final_loss is not None and history.final_acc is not None:
        summary.final_loss, summary.train_acc = history.final_loss, history.final_acc
    else:
        summary.final_loss, summary.train_acc = evaluate(model, run_data.x_train, run_data.y_train, chunk_size)
    if run_data.x_test is not None and run_data.y_test is not None:
        summary.test_loss, summary.test_acc = evaluate(model, run_data.x_test, run_data.y_test, chunk_size)
    return summary


def run_training(data: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 out: str | Path, progress: bool = True, *, checkpoint_every: int | None = None,
                 resume: bool = False, device: str = "cpu", stop: Callable[[], bool] | None = None,
                 tensorboard: bool = False) -> RunSummary:
    """Train once and write the run record to ``out``; returns its summary.

    ``checkpoint_every`` N > 0 writes ``out/checkpoint.safetensors`` every N steps (None:
    the resumed checkpoint's own N, else 0 = never).
    ``resume`` continues a run in ``out`` (its config.json must equal this config) from
    that checkpoint, bit-identically; metrics.jsonl is cut back to the checkpoint's
    step. A completed run is returned as is; with no checkpoint the run starts afresh.
    ``stop`` (e.g. set by a signal handler) is asked before every step: when True, the
    checkpoint, the model and a summary with status ``interrupted`` are written and the
    summary is returned. A diverged run writes a summary with status ``diverged`` (no
    model) and raises :class:`TrainingDiverged`. ``tensorboard`` also logs to ``out/tensorboard``.
    """
    check_size(model_cfg, data.dim if data.data == "synthetic" else LENET_FEATURES,
               data.num_classes if data.data == "synthetic" else NUM_CLASSES)  # before anything is written
    out = make_dir(out, "out")
    remove_stale_temporaries(out)  # left by a write a kill interrupted
    config = resolved_config(data, model_cfg, train_cfg)
    state = _resume_state(out, config) if resume else None
    if isinstance(state, RunSummary):
        return state
    board = TensorBoardLog(out / "tensorboard") if tensorboard else None
    metrics = MetricsFile(out / "metrics.jsonl")
    if state is None:
        (out / CHECKPOINT_NAME).unlink(missing_ok=True)
        (out / "summary.json").unlink(missing_ok=True)
        atomic_write_json(out / "config.json", config)
        atomic_write_json(out / "env.json", environment(device))
        metrics.path.write_text("")
    else:
        truncate_metrics(metrics.path, state.step)
        if checkpoint_every is None:
            checkpoint_every = int(state.extra.get("checkpoint_every", 0))
    checkpoint_every = checkpoint_every or 0
    run_data = build_data(data, train_cfg.seed, check_device(device))
    X, y = run_data.x_train, run_data.y_train
    model = build_model(model_cfg, X.shape[1], run_data.num_classes, train_cfg.seed + 1).to(device)
    bar = Progress(train_cfg.total_steps(X.shape[0]), "train", enabled=progress)
    resumed_from = None if state is None else state.step

    def on_log(record: dict[str, Any]) -> None:
        metrics.append(record)
        if board is not None:
            board.log(record)
        bar.update(record["step"] + 1 - bar.count, loss=record["loss"], acc=record["train_acc"])

    def on_checkpoint(train_state: TrainState) -> None:
        metrics.flush()
        train_state.extra["checkpoint_every"] = checkpoint_every
        save_train_state(out / CHECKPOINT_NAME, train_state)

    try:
        history: History = train(model, X, y, train_cfg, on_log=on_log, checkpoint_every=checkpoint_every,
                                 on_checkpoint=on_checkpoint, resume=state, stop=stop)
    except TrainingDiverged as exc:
        metrics.flush()
        bar.close()
        if board is not None:
            board.close()
        (out / "model.safetensors").unlink(missing_ok=True)
        write_record(out / "summary.json", make_summary("diverged", None, run_data, None, resumed_from,
                                                        diverged=exc))
        raise
    finally:
        metrics.flush()
    bar.close()
    save_model(out / "model.safetensors", model, config)
    status = "interrupted" if history.interrupted else "completed"
    summary = make_summary(status, history, run_data, model, resumed_from, train_cfg.chunk_size)
    write_record(out / "summary.json", summary)
    if board is not None:
        board.final(summary.to_dict())
        board.close()
    if status == "completed":
        (out / CHECKPOINT_NAME).unlink(missing_ok=True)
    return summary
