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
import math
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
_HISTORY_KEYS = {"step", "loss", "train_acc", "perfect_step", "steps_run", "seconds"}
_HISTORY_OPTIONAL = {"final_loss", "final_acc", "interrupted"}  # absent in states saved before them
_META_KEYS = {"version", "step", "position", "window", "history", "optimizer", "param_groups", "extra"}


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
                generator: torch.Generator, num_samples: int, total_steps: int | None = None) -> None:
        """Load weights, optimizer state and generator state in place.

        Raises :class:`ConfigError` (field ``resume``) if the state does not fit the
        model, the data or the run length ``total_steps`` (another config).
        """
        if total_steps is not None and not 0 <= self.step <= total_steps:
            raise ConfigError("resume", f"checkpoint step {self.step} is not in 0..{total_steps} (another config?)")
        if self.rng.shape != generator.get_state().shape:
            raise ConfigError("resume", f"checkpoint generator state has {self.rng.numel()} bytes, this "
                              f"device's has {generator.get_state().numel()} (another device?)")
        if self.order.shape != (num_samples,):
            raise ConfigError("resume", f"checkpoint permutation has {self.order.shape[0]} rows, "
                              f"the data has {num_samples} (another data config?)")
        current = optimizer.state_dict()["param_groups"]
        saved = self.optimizer["param_groups"]
        if len(saved) != len(current) or not all(_same_types(a, b) for a, b in zip(saved, current, strict=False)):
            raise ConfigError("resume", "checkpoint optimizer settings do not fit the optimizer (another config?)")
        try:
            model.load_state_dict(self.model, strict=True)
            optimizer.load_state_dict(self.optimizer)
        except (RuntimeError, ValueError, LookupError, TypeError) as exc:
            raise ConfigError("resume", f"checkpoint does not fit the model/optimizer ({exc})") from None
        generator.set_state(self.rng)


def _same_types(a: object, b: object) -> bool:
    """Same JSON-level structure: equal types, dict keys and sequence lengths, all the way down."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b)


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


def _rng_sizes() -> set[int]:
    """Valid ``get_state()`` sizes: the CPU mt19937 state and CUDA's (seed, offset) pair."""
    return {torch.Generator().get_state().numel(), 16}


class _Checker:
    """Raises :class:`DataError` naming the file and the field at fault."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field_name: str, message: str) -> DataError:
        return DataError(self.source, f"train state field {field_name!r} {message}")

    def int(self, value: object, field_name: str, lo: int = 0, hi: int | None = None) -> int:
        if type(value) is not int or value < lo or (hi is not None and value > hi):
            raise self.fail(field_name, f"must be an int in {lo}..{'' if hi is None else hi}, got {value!r}")
        return value

    def number(self, value: object, field_name: str) -> float:
        if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
            raise self.fail(field_name, f"must be a finite number, got {value!r}")
        return float(value)  # type: ignore[arg-type]

    def dict(self, value: object, field_name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field_name, f"must be a JSON object, got {type(value).__name__}")
        return value


def _check_history(check: _Checker, history: object, step: int) -> dict[str, Any]:
    """History lists of equal length: strictly increasing steps < ``step``, finite losses, accuracies in [0, 1]."""
    h = check.dict(history, "history")
    if not _HISTORY_KEYS <= set(h) <= _HISTORY_KEYS | _HISTORY_OPTIONAL:
        raise check.fail("history", f"must have the keys {sorted(_HISTORY_KEYS)} (and optionally "
                                    f"{sorted(_HISTORY_OPTIONAL)}), got {sorted(h)}")
    lists = [h[k] for k in ("step", "loss", "train_acc")]
    if not all(isinstance(v, list) for v in lists) or len({len(v) for v in lists}) != 1:
        raise check.fail("history", "step, loss and train_acc must be lists of equal length")
    previous = -1
    for i, (s, loss, acc) in enumerate(zip(*lists, strict=True)):
        previous = check.int(s, f"history.step[{i}]", previous + 1, step - 1)
        check.number(loss, f"history.loss[{i}]")
        if not 0.0 <= check.number(acc, f"history.train_acc[{i}]") <= 1.0:
            raise check.fail(f"history.train_acc[{i}]", f"must be in [0, 1], got {acc!r}")
    if h["perfect_step"] is not None:
        check.int(h["perfect_step"], "history.perfect_step", 0, step)
    check.int(h["steps_run"], "history.steps_run", step, step)
    if check.number(h["seconds"], "history.seconds") < 0:
        raise check.fail("history.seconds", "must be >= 0")
    for key in ("final_loss", "final_acc"):
        if h.get(key) is not None:
            check.number(h[key], f"history.{key}")
    if not isinstance(h.get("interrupted", False), bool):
        raise check.fail("history.interrupted", f"must be true or false, got {h['interrupted']!r}")
    return h


def _check_tensors(check: _Checker, tensors: dict[str, torch.Tensor], position: object) -> None:
    """rng: a uint8 generator state of a known size; order: a permutation of 0..n−1; position ∈ 0..n."""
    for name in tensors:
        kind, _, rest = name.partition(".")
        index, _, key = rest.partition(".")
        if not (name in ("rng", "order") or (kind == "model" and rest)
                or (kind == "optim" and index.isdigit() and key)):
            raise check.fail(name, "is not a train-state tensor (model.*, optim.<i>.*, rng, order)")
    rng, order = tensors.get("rng"), tensors.get("order")
    if rng is None or rng.dtype != torch.uint8 or rng.dim() != 1 or rng.numel() not in _rng_sizes():
        raise check.fail("rng", f"must be a uint8 vector of {sorted(_rng_sizes())} bytes")
    if rng.numel() == torch.Generator().get_state().numel():
        try:
            torch.Generator().set_state(rng)
        except RuntimeError:
            raise check.fail("rng", "is not a valid mt19937 state") from None
    if order is None or order.dtype != torch.int64 or order.dim() != 1:
        raise check.fail("order", "must be an int64 vector")
    n = order.numel()
    if not torch.equal(torch.sort(order).values, torch.arange(n)):
        raise check.fail("order", f"must be a permutation of 0..{n - 1}")
    check.int(position, "position", 0, n)


def check_meta(meta: object, tensors: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Every field of a train state's metadata checked against its schema (DataError naming it)."""
    check = _Checker(source)
    m = check.dict(meta, "metadata")
    if m.get("version") != FORMAT_VERSION:
        raise DataError(source, f"train state version {m.get('version')!r} is not {FORMAT_VERSION}")
    missing = _META_KEYS - set(m)
    if missing:
        raise check.fail(sorted(missing)[0], "is missing")
    step = check.int(m["step"], "step")
    _check_history(check, m["history"], step)
    window = m["window"]
    if not isinstance(window, list) or len(window) != 3:
        raise check.fail("window", "must be [loss sum, correct, rows]")
    check.number(window[0], "window[0]")
    count = check.int(window[2], "window[2]")
    check.int(window[1], "window[1]", 0, count)
    _check_tensors(check, tensors, m["position"])
    optimizer, groups = check.dict(m["optimizer"], "optimizer"), m["param_groups"]
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise check.fail("param_groups", "must be a list of JSON objects")
    lrs = optimizer.get("lr")
    if not isinstance(lrs, list) or len(lrs) != len(groups):
        raise check.fail("optimizer.lr", f"must be a list of {len(groups)} numbers")
    for i, lr in enumerate(lrs):
        check.number(lr, f"optimizer.lr[{i}]")
    scalars = check.dict(optimizer.get("scalars"), "optimizer.scalars")
    for index, values in scalars.items():
        if not index.isdigit():
            raise check.fail("optimizer.scalars", f"key {index!r} is not a parameter index")
        for key, value in check.dict(values, f"optimizer.scalars.{index}").items():
            check.number(value, f"optimizer.scalars.{index}.{key}")
    extra = check.dict(m["extra"], "extra")
    if "checkpoint_every" in extra:
        check.int(extra["checkpoint_every"], "extra.checkpoint_every")
    return m


def load_train_state(path: str | Path) -> TrainState:
    """Read a file written by :func:`save_train_state`; :class:`DataError` naming the file and
    field if it is not one (every metadata field is checked by :func:`check_meta` before use)."""
    source = str(path)
    tensors, metadata = tensorfile.load(path)
    if META_KEY not in metadata:
        raise DataError(source, f"not a coarsegrad train state (no {META_KEY!r} metadata)")
    try:
        raw = json.loads(metadata[META_KEY])
    except (ValueError, RecursionError) as exc:
        raise DataError(source, f"train state metadata is not JSON ({type(exc).__name__})") from None
    meta = check_meta(raw, tensors, source)
    groups = [dict(g, lr=lr) for g, lr in zip(meta["param_groups"], meta["optimizer"]["lr"], strict=True)]
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
        step=meta["step"], model=model, optimizer={"state": optim_state, "param_groups": groups},
        rng=tensors["rng"], order=tensors["order"], position=meta["position"],
        window=(float(loss), correct, count), history=dict(meta["history"]), extra=dict(meta["extra"]),
    )


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
