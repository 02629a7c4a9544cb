"""Training-loop state for exact resumption: exported after a step, imported before the next.

A :class:`TrainState` at ``step`` (= number of optimizer steps done) holds everything the
loop of :func:`coarsegrad.training.loop.train` carries from one step to the next:

- model tensors (parameters and buffers, ``state_dict``);
- optimizer state tensors (momentum buffers; Adam's step, m, v) and each group's ``lr``;
- the batch-order generator's ``get_state()`` (a uint8 tensor);
- the current epoch's permutation ``order`` and the ``position`` in it (mini-batch runs);
- the metric window not yet logged: (Σ loss, #correct, #rows);
- the :class:`~coarsegrad.training.loop.History` so far, as a dict.

Restoring it and running steps ``step … total−1`` gives the same floats, bit for bit, as
never stopping (same device, torch build and thread count).

File format (:func:`save_train_state`, atomic): safetensors with tensors ``model.<name>``,
``optim.<param index>.<key>``, ``rng`` and ``order``; metadata key ``coarsegrad.train_state``
= JSON {version, step, position, window, history, lr per group, non-tensor optimizer
state, extra}. Python floats survive JSON exactly (shortest round-trip repr).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.io import tensorfile
from coarsegrad.io.records import atomic_write_text

META_KEY = "coarsegrad.train_state"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass
class TrainState:
    """The loop's state after ``step`` optimizer steps (see the module docstring)."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: torch.Tensor
    order: torch.Tensor
    position: int
    window: tuple[float, int, int]
    history: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def capture(cls, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                generator: torch.Generator, order: torch.Tensor, position: int,
                window: tuple[float, int, int], history: dict[str, Any]) -> "TrainState":
        """A detached copy of the loop state (later steps do not change it)."""
        return cls(
            step=step,
            model={k: v.detach().clone() for k, v in model.state_dict().items()},
            optimizer=copy.deepcopy(optimizer.state_dict()),
            rng=generator.get_state().clone(),
            order=order.detach().clone(),
            position=int(position),
            window=(float(window[0]), int(window[1]), int(window[2])),
            history=copy.deepcopy(history),
        )

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                generator: torch.Generator, num_samples: int) -> None:
        """Load weights, optimizer state and generator state in place.

        Raises :class:`ConfigError` (field ``resume``) if the state does not fit the
        model or the data (another config).
        """
        if self.order.shape != (num_samples,):
            raise ConfigError("resume", f"checkpoint permutation has {self.order.shape[0]} rows, "
                              f"the data has {num_samples} (another data config?)")
        try:
            model.load_state_dict(self.model, strict=True)
            optimizer.load_state_dict(self.optimizer)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ConfigError("resume", f"checkpoint does not fit the model/optimizer ({exc})") from None
        generator.set_state(self.rng)


def _split_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors named ``optim.<i>.<key>``, JSON-able rest: lr per group, scalar state)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"lr": [g["lr"] for g in state_dict["param_groups"]], "scalars": scalars}


def save_train_state(path: str | Path, state: TrainState) -> None:
    """Atomically write ``state`` to ``path`` (safetensors; format in the module docstring)."""
    tensors = {f"model.{k}": v for k, v in state.model.items()}
    optim_tensors, optim_json = _split_optimizer(state.optimizer)
    tensors.update(optim_tensors)
    tensors["rng"] = state.rng
    tensors["order"] = state.order
    meta = {
        "version": FORMAT_VERSION, "step": state.step, "position": state.position,
        "window": list(state.window), "history": state.history, "optimizer": optim_json,
        "param_groups": [{k: v for k, v in g.items() if k != "lr"} for g in state.optimizer["param_groups"]],
        "extra": state.extra,
    }
    try:
        text = json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError("extra", f"train state must be JSON-serialisable ({exc})") from None
    tensorfile.save(path, tensors, {META_KEY: text})


def load_train_state(path: str | Path) -> TrainState:
    """Read a file written by :func:`save_train_state`; :class:`DataError` if it is not one."""
    tensors, metadata = tensorfile.load(path)
    try:
        meta = json.loads(metadata[META_KEY])
        if meta["version"] != FORMAT_VERSION:
            raise DataError(str(path), f"train state version {meta['version']!r} is not {FORMAT_VERSION}")
        groups = [dict(g, lr=lr) for g, lr in zip(meta["param_groups"], meta["optimizer"]["lr"], strict=False)]
        for group in groups:  # JSON turned tuples (Adam's betas) into lists
            group.update({k: tuple(v) for k, v in group.items() if isinstance(v, list) and k != "params"})
        optim_state: dict[int, dict[str, Any]] = {}
        for index, values in meta["optimizer"]["scalars"].items():
            optim_state.setdefault(int(index), {}).update(values)
        model = {}
        for name, tensor in tensors.items():
            kind, _, rest = name.partition(".")
            if kind == "model":
                model[rest] = tensor
            elif kind == "optim":
                index, _, key = rest.partition(".")
                optim_state.setdefault(int(index), {})[key] = tensor
        loss, correct, count = meta["window"]
        return TrainState(
            step=int(meta["step"]), model=model,
            optimizer={"state": optim_state, "param_groups": groups},
            rng=tensors["rng"], order=tensors["order"], position=int(meta["position"]),
            window=(float(loss), int(correct), int(count)), history=dict(meta["history"]),
            extra=dict(meta.get("extra") or {}),
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(str(path), f"not a coarsegrad train state ({exc!r})") from None


def truncate_metrics(path: str | Path, step: int) -> int:
    """Keep only the lines of a ``metrics.jsonl`` with ``"step" < step``; returns their count.

    Unparseable lines (a line cut by a crash) are dropped. The rewrite is atomic.
    """
    path = Path(path)
    kept = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if line.endswith("\n") and isinstance(record, dict) and int(record.get("step", step)) < step:
                kept.append(line)
    atomic_write_text(path, "".join(kept))
    return len(kept)
