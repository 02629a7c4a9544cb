"""Coarse gradient descent: one plain training loop for full-batch and mini-batch runs.

A step computes L = mean_i CE(model(x_i), y_i) and its coarse gradient (σ′ replaced
by the STE's μ′ through autograd), then updates with SGD, SGD+momentum or Adam.
Full-batch steps accumulate the gradient over row chunks of ``chunk_size``, so
memory stays bounded; the result equals the unchunked gradient up to float rounding
(models without batch-norm). Mini-batch runs slice a fresh permutation each epoch
(no DataLoader). All randomness comes from one generator seeded with ``seed``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import nn
from torch.nn import functional as F

from coarsegrad import validate as v
from coarsegrad.errors import ConfigError, DataError, TrainingDiverged
from coarsegrad.training.fast import fast_step
from coarsegrad.training.state import TrainState
from coarsegrad.training.weight_methods import WeightMethods
from coarsegrad.validate import check_data

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass
class TrainConfig:
    """How to train. ``batch_size`` 0 or None = full batch (coarse gradient descent).

    Give ``steps`` or ``epochs`` (not both); with neither, ``steps = 1000``.
    ``stop_at_perfect`` (full batch only) stops at the first step whose weights classify
    every training row correctly (each full-batch step counts them anyway).
    ``stop_at_perfect_every`` N > 0 (mini-batch runs) evaluates the whole training split
    every N steps and stops when it is classified perfectly (0: never; one perfect batch
    never stops a run).
    ``fast`` computes the coarse gradient of an MLP without batch-norm or a TwoLayerNet
    by :mod:`coarsegrad.training.fast` (no autograd graph, chunks of at most ``chunk_size`` rows;
    equal up to float rounding); False forces autograd. Other models always use autograd.
    """

    optimizer: Literal["sgd", "momentum", "adam"] = "sgd"
    lr: float = 0.1
    schedule: Literal["constant", "cosine"] = "constant"
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int | None = None
    steps: int | None = None
    epochs: int | None = None
    stop_at_perfect: bool = True
    stop_at_perfect_every: int = 0
    seed: int = 0
    chunk_size: int = 8192
    log_every: int = 1
    fast: bool = True

    def __post_init__(self) -> None:
        v.choice("optimizer", self.optimizer, OPTIMIZERS)
        v.number("lr", self.lr, lo=0.0, lo_open=True)
        v.choice("schedule", self.schedule, ("constant", "cosine"))
        v.number("momentum", self.momentum, lo=0.0, hi=1.0, hi_open=True)
        v.number("weight_decay", self.weight_decay, lo=0.0)
        v.boolean("fast", self.fast)
        v.boolean("stop_at_perfect", self.stop_at_perfect)
        if type(self.batch_size) is int and self.batch_size == 0:
            self.batch_size = None
        v.optional_integer("batch_size", self.batch_size, lo=1, hi=v.MAX_BATCH)
        v.optional_integer("steps", self.steps, lo=1, hi=v.MAX_STEPS)
        v.optional_integer("epochs", self.epochs, lo=1, hi=v.MAX_STEPS)
        v.integer("seed", self.seed, lo=0, hi=v.MAX_SEED)
        v.integer("chunk_size", self.chunk_size, lo=1, hi=v.MAX_BATCH)
        v.integer("log_every", self.log_every, lo=1, hi=v.MAX_STEPS)
        v.integer("stop_at_perfect_every", self.stop_at_perfect_every, lo=0, hi=v.MAX_STEPS)
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("steps", "give steps or epochs, not both")
        if self.steps is None and self.epochs is None:
            self.steps = 1000

    def lr_at(self, step: int, total: int) -> float:
        """Step size at ``step`` of ``total``: constant, or lr·½(1 + cos(π·step/total))."""
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))

    def total_steps(self, num_samples: int) -> int:
        """Number of optimizer steps for a training set of ``num_samples`` rows."""
        if self.steps is not None:
            return self.steps
        per_epoch = 1 if self.batch_size is None else math.ceil(num_samples / self.batch_size)
        return int(self.epochs) * per_epoch  # type: ignore[arg-type]


@dataclass
class History:
    """Metrics per logged step: loss and training accuracy before that step's update.

    For mini-batch runs they are means over the batches since the previous log (a
    progress signal, not a result). ``final_loss``/``final_acc``: the final weights on
    the whole training set (:func:`evaluate`), independent of ``log_every``.
    ``perfect_step`` = k: the weights after k updates classify every training row
    correctly, first such k (full batch: exact, every step is checked; mini-batch: only
    with ``stop_at_perfect_every``, at those checks and at the end; else None).
    ``interrupted``: the loop stopped early because ``stop()`` returned True.
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    perfect_step: int | None = None
    steps_run: int = 0
    seconds: float = 0.0
    final_loss: float | None = None
    final_acc: float | None = None
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_optimizer(params: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer``, with PyTorch's fused update (one kernel,
    the same formula) where the parameters allow it: on CPU, SGD ~1.6× and Adam ~10×
    faster per step at 784×2048."""
    params = list(params)
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    try:
        return _optimizer(params, config, fused=True if fused else None)
    except (RuntimeError, ValueError):  # a torch without this fused kernel
        if not fused:
            raise
        return _optimizer(params, config, fused=None)


def _optimizer(params: list[torch.nn.Parameter], config: TrainConfig, fused: bool | None) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    momentum = config.momentum if config.optimizer == "momentum" else 0.0
    return torch.optim.SGD(params, lr=config.lr, momentum=momentum, weight_decay=config.weight_decay, fused=fused)


def _accumulate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, chunk: int,
                scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward of scale·Σ CE over ``chunk``-row pieces; returns (Σ CE, #correct), detached."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=X.device)
    correct = torch.zeros((), dtype=torch.int64, device=X.device)
    for start in range(0, X.shape[0], chunk):
        xb, yb = X[start:start + chunk], y[start:start + chunk]
        out = model(xb)
        if start == 0 and int(y.max()) >= out.shape[1]:
            raise DataError("y", f"label {int(y.max())} is out of range for {out.shape[1]} outputs")
        loss = F.cross_entropy(out, yb, reduction="sum")
        (loss * scale).backward()  # type: ignore[no-untyped-call]
        loss_sum += loss.detach()
        correct += (out.detach().argmax(1) == yb).sum()
    return loss_sum, correct


@torch.no_grad()
def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, chunk_size: int = 8192) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on (X, y), in chunks, without gradients.

    Raises :class:`DataError` on unusable data (NaN/inf in X, bad labels), on non-finite
    weights and on non-finite outputs: never a NaN loss beside an accuracy.
    """
    check_data(X, y)
    bad = first_nonfinite(model)
    if bad is not None:
        raise DataError("model", f"parameter {bad!r} has non-finite values")
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        for start in range(0, X.shape[0], chunk_size):
            out = model(X[start:start + chunk_size])
            if not bool(torch.isfinite(out).all()):
                raise DataError("model", "produces non-finite outputs (non-finite weights?)")
            yb = y[start:start + chunk_size]
            if int(yb.max()) >= out.shape[1]:
                raise DataError("y", f"label {int(yb.max())} is out of range for {out.shape[1]} outputs")
            loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    finally:
        model.train(was_training)
    return loss_sum / X.shape[0], correct / X.shape[0]


def first_nonfinite(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer with a NaN or infinite entry, or None."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def train(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    *,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    resume: TrainState | None = None,
    stop: Callable[[], bool] | None = None,
) -> History:
    """Train ``model`` on (X, y) in place; return the :class:`History`.

    ``on_log`` receives ``{"step", "loss", "train_acc", "lr"}`` at every logged step (for
    progress bars and metrics files). ``on_checkpoint`` receives a :class:`TrainState`
    after every ``checkpoint_every``-th optimizer step (0: never; not after the last);
    passing one back as ``resume`` continues exactly where it was taken (same model
    architecture, data and config). ``stop`` is asked before every step; when it returns
    True the loop ends there (``history.interrupted``) and hands ``on_checkpoint`` the state.
    Quantized-weight layers get their method's rule around every optimizer step
    (:class:`~coarsegrad.training.weight_methods.WeightMethods`; never the fast step).
    Raises :class:`TrainingDiverged` on a non-finite loss or, after the last update, a
    non-finite parameter; :class:`DataError` on unusable data.
    """
    v.integer("checkpoint_every", checkpoint_every, lo=0, hi=v.MAX_STEPS)
    check_data(X, y)
    n = X.shape[0]
    total = config.total_steps(n)
    generator = torch.Generator(device=X.device).manual_seed(config.seed)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    history = History()
    model.train()
    batch = config.batch_size or n
    full_batch = batch >= n
    fast = fast_step(model, X, y, config.chunk_size) if config.fast else None
    methods = WeightMethods(model, total)  # quantized-weight rules; empty for float weights
    order = torch.arange(n, device=X.device)
    position = n  # forces a fresh permutation at the first mini-batch step
    window_loss, window_correct, window_count = 0.0, 0, 0
    first = 0
    if resume is not None:
        resume.restore(model, optimizer, generator, n, total)
        first, order, position = resume.step, resume.order.to(X.device), resume.position
        window_loss, window_correct, window_count = resume.window
        history = History(**resume.history)
        history.interrupted = False
    check_every = 0 if full_batch else config.stop_at_perfect_every
    seconds_before = history.seconds
    started = time.perf_counter()

    def capture() -> TrainState:
        history.seconds = seconds_before + time.perf_counter() - started
        return TrainState.capture(history.steps_run, model, optimizer, generator, order, position,
                                  (window_loss, window_correct, window_count), history.as_dict())

    for step in range(first, total):
        if stop is not None and stop():
            history.interrupted = True
            if on_checkpoint is not None:
                on_checkpoint(capture())
            break
        if check_every and step % check_every == 0 and step > 0 \
                and evaluate(model, X, y, config.chunk_size)[1] == 1.0:
            history.perfect_step = step
            break
        optimizer.zero_grad(set_to_none=True)
        if full_batch:
            loss_sum, correct = (fast.accumulate(X, y, None, 1.0 / n) if fast else
                                 _accumulate(model, X, y, config.chunk_size, 1.0 / n))
            count = n
        else:
            if position + batch > n:
                order = torch.randperm(n, generator=generator, device=X.device)
                position = 0
            idx = order[position:position + batch]
            position += batch
            count = idx.shape[0]
            loss_sum, correct = (fast.accumulate(X, y, idx, 1.0 / count) if fast else
                                 _accumulate(model, X[idx], y[idx], config.chunk_size, 1.0 / count))
        step_loss, step_correct = float(loss_sum), int(correct)
        if not math.isfinite(step_loss):
            raise TrainingDiverged(step, step_loss, first_nonfinite(model))
        window_loss += step_loss
        window_correct += step_correct
        window_count += count
        perfect = full_batch and step_correct == n
        if (step + 1) % config.log_every == 0 or step == total - 1 or (perfect and config.stop_at_perfect):
            record = {"step": step, "loss": window_loss / window_count,
                      "train_acc": window_correct / window_count, "lr": config.lr_at(step, total)}
            history.step.append(step)
            history.loss.append(record["loss"])
            history.train_acc.append(record["train_acc"])
            window_loss, window_correct, window_count = 0.0, 0, 0
            if on_log is not None:
                on_log(record)
        if perfect and history.perfect_step is None:
            history.perfect_step = step  # the weights before this step's update
            if config.stop_at_perfect:
                break
        if config.schedule != "constant":
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step, total)
        if methods:  # float weights: nothing to do, and nothing spent on the hot path
            methods.before_step()
        optimizer.step()
        if methods:
            methods.after_step(step)
        history.steps_run = step + 1
        if on_checkpoint is not None and checkpoint_every and history.steps_run % checkpoint_every == 0 \
                and history.steps_run < total:
            on_checkpoint(capture())
    history.seconds = seconds_before + time.perf_counter() - started
    bad = first_nonfinite(model)
    if bad is not None:
        raise TrainingDiverged(max(history.steps_run - 1, 0), float("nan"), bad)
    if not history.interrupted:
        history.final_loss, history.final_acc = evaluate(model, X, y, config.chunk_size)
        if history.final_acc == 1.0 and history.perfect_step is None and (full_batch or check_every):
            history.perfect_step = history.steps_run
    return history
