"""The "repelled" study: does training continued from a good minimum stay there?

Yin et al. (ICLR 2019, arXiv 1903.05662, §5) report that the identity STE is *repelled*
from good minima: its full-batch coarse gradient

    g_μ(θ) = ∇̃_θ (1/N) Σ_i CE(f_θ(x_i), y_i)      (σ′ replaced by μ′ in the chain rule)

does not vanish there, so steps θ ← θ − η·g_μ move away, while the monotone STEs
(relu, clipped_relu, log_tailed_relu) stay. Protocol, per (bits, seed):

1. θ₀: train a network with ``pretrain_ste`` (``pretrain``: a :class:`TrainConfig` dict).
2. For each step size η and STE μ: copy θ₀, set the STE, run ``steps`` plain SGD steps
   θ ← θ − η·g_μ(batch) on mini-batches of ``batch_size`` (None: full batch). Every STE
   and η sees the same batch sequence (one generator seeded with ``seed``). At each step
   in ``eval_at`` record the full-batch coarse gradient (‖g_μ‖, and ‖g_μ‖ on the
   parameters before σ — the only part μ′ changes), training and test loss/accuracy and
   ‖θ − θ₀‖.

Only ``model`` ∈ {"mlp" (no batch-norm), "two_layer"}: for both the training loss is the
same in train and eval mode.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from coarsegrad.data.splits import DatasetSplits, prepare_dataset
from coarsegrad.errors import ConfigError
from coarsegrad.models.networks import MLP, TwoLayerNet
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.staircase import check_bits
from coarsegrad.quant.ste import BUILTIN_STES, get_ste
from coarsegrad.theory.population import THEORY_ROUNDING
from coarsegrad.training.fast import FastStep, fast_step
from coarsegrad.training.loop import TrainConfig, evaluate, train
from coarsegrad.validate import MAX_STEPS, MAX_UNITS, integer, number

MODELS = ("mlp", "two_layer")
PRETRAIN = {"optimizer": "momentum", "lr": 0.05, "batch_size": 128, "epochs": 3, "schedule": "cosine"}


@dataclass
class RepelledConfig:
    """Continue from a pretrained point with each STE; see the module docstring."""

    model: str = "mlp"
    hidden: int = 256
    units_per_class: int = 50
    init_scale: float = 1.0
    bits: tuple[int, ...] = (2, 4)
    stes: tuple[str, ...] = tuple(BUILTIN_STES)
    pretrain_ste: str = "clipped_relu"
    pretrain: dict = field(default_factory=lambda: dict(PRETRAIN))
    seeds: int = 3
    lrs: tuple[float, ...] = (0.01, 0.1, 0.5)
    batch_size: int | None = 128
    steps: int = 300
    eval_at: tuple[int, ...] | None = None
    dataset: str = "mnist"
    data_dir: str | None = None
    train_subset: int | None = None
    chunk_size: int = 8192
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError("model", f"must be one of {', '.join(MODELS)}, got {self.model!r}")
        if not self.bits:
            raise ConfigError("bits", "give at least one value")
        for b in self.bits:
            check_bits(b)
        if not self.stes:
            raise ConfigError("stes", "give at least one STE")
        for s in (*self.stes, self.pretrain_ste):
            get_ste(s)
        for name in ("hidden", "units_per_class"):
            integer(name, getattr(self, name), lo=1, hi=MAX_UNITS)
        for name in ("seeds", "steps", "chunk_size"):
            _positive(name, getattr(self, name))
        for name in ("batch_size", "train_subset", "workers"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if not self.lrs:
            raise ConfigError("lrs", f"give step sizes > 0, got {self.lrs!r}")
        for lr in self.lrs:
            number("lrs", lr, lo=0.0, lo_open=True)
        number("init_scale", self.init_scale, lo=0.0, lo_open=True)
        try:
            TrainConfig(**self.pretrain)
        except TypeError as exc:
            raise ConfigError("pretrain", str(exc)) from None
        if self.eval_at is None:
            self.eval_at = tuple(sorted({0, self.steps // 10, self.steps // 3, self.steps}))
        self.eval_at = tuple(sorted(set(self.eval_at)))
        if self.eval_at[0] != 0 or self.eval_at[-1] > self.steps:
            raise ConfigError("eval_at", f"must include 0 and stay within 0..{self.steps}, got {self.eval_at}")

    @classmethod
    def quick(cls, **kw: Any) -> "RepelledConfig":
        params: dict[str, Any] = {"hidden": 64, "seeds": 1, "lrs": (0.5,), "steps": 30, "train_subset": 3000,
                      "pretrain": {**PRETRAIN, "epochs": 1}, **kw}
        return cls(**params)


def _positive(name: str, value: object) -> None:
    integer(name, value, lo=1, hi=MAX_STEPS)


def make_model(cfg: RepelledConfig, bits: int, in_features: int, num_classes: int,
               generator: torch.Generator) -> nn.Module:
    """The ``cfg.model`` network with ``cfg.pretrain_ste`` and α = optimal_alpha(bits)."""
    quant = ActQuant(bits, None, cfg.pretrain_ste, THEORY_ROUNDING)
    if cfg.model == "mlp":
        return MLP(in_features, cfg.hidden, num_classes, generator=generator, quant=quant)
    return TwoLayerNet(in_features, num_classes, cfg.units_per_class, init_scale=cfg.init_scale,
                       generator=generator, quant=quant)


def first_layer_names(model: nn.Module) -> tuple[str, ...]:
    """Names of the parameters before σ: the only ones whose coarse gradient depends on μ′."""
    if isinstance(model, TwoLayerNet):
        return ("W",)
    if isinstance(model, MLP):
        return tuple(n for n, _ in model.named_parameters() if n.startswith("fc1."))
    raise ConfigError("model", f"unsupported model {type(model).__name__}")


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every parameter, in order."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _accumulate(model: nn.Module, fast: FastStep | None, X: torch.Tensor, y: torch.Tensor,
                rows: torch.Tensor | None, chunk: int) -> tuple[float, int]:
    """Set p.grad = coarse gradient of the mean CE over ``rows`` (all if None); (Σ CE, #correct)."""
    model.zero_grad(set_to_none=True)
    if fast is not None:
        fast_loss, fast_correct = fast.accumulate(X, y, rows, 1.0 / (X.shape[0] if rows is None else rows.shape[0]))
        return float(fast_loss), int(fast_correct)
    xs, ys = (X, y) if rows is None else (X[rows], y[rows])
    loss_sum, correct = 0.0, 0
    for start in range(0, xs.shape[0], chunk):
        out = model(xs[start:start + chunk])
        loss = F.cross_entropy(out, ys[start:start + chunk], reduction="sum")
        (loss / xs.shape[0]).backward()
        loss_sum += float(loss.detach())
        correct += int((out.detach().argmax(1) == ys[start:start + chunk]).sum())
    return loss_sum, correct


def coarse_gradient_norms(model: nn.Module, X: torch.Tensor, y: torch.Tensor,
                          chunk_size: int = 8192) -> dict[str, float]:
    """Full-batch g_μ = ∇̃ (1/N) Σ CE: {loss, acc, grad_norm, grad_norm_first, grad_norm_rest}.

    ``grad_norm_first`` is ‖g‖ on :func:`first_layer_names`, ``grad_norm_rest`` on the
    others (true gradients, the same for every STE). Leaves ``p.grad`` unset.
    """
    loss_sum, correct = _accumulate(model, fast_step(model, X, y, chunk_size), X, y, None, chunk_size)
    first = set(first_layer_names(model))
    sq = {True: 0.0, False: 0.0}
    for name, p in model.named_parameters():
        if p.grad is not None:
            sq[name in first] += float(p.grad.double().pow(2).sum())
    model.zero_grad(set_to_none=True)
    return {"loss": loss_sum / X.shape[0], "acc": correct / X.shape[0],
            "grad_norm": math.sqrt(sq[True] + sq[False]), "grad_norm_first": math.sqrt(sq[True]),
            "grad_norm_rest": math.sqrt(sq[False])}


def _distance(model: nn.Module, start: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((p.detach() - start[n]).double().pow(2).sum())
                         for n, p in model.named_parameters()))


def continue_training(start: nn.Module, ste: str, lr: float, splits: DatasetSplits, x: torch.Tensor,
                      y: torch.Tensor, cfg: RepelledConfig, seed: int) -> list[dict]:
    """From a copy of ``start`` with STE ``ste``: ``cfg.steps`` SGD steps θ ← θ − lr·g_μ(batch).

    Returns one record per step in ``cfg.eval_at`` (measured before that step's update).
    """
    model = copy.deepcopy(start)
    act = model.act
    if not isinstance(act, QuantReLU):
        raise ConfigError("model", f"needs a QuantReLU activation, got {type(act).__name__}")
    act.quant = replace(act.quant, ste=get_ste(ste))
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    fast = fast_step(model, x, y, cfg.chunk_size)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    batch = min(cfg.batch_size or n, n)
    order, position = torch.arange(n), n
    records: list[dict] = []
    for step in range(cfg.steps + 1):
        if cfg.eval_at is not None and step in cfg.eval_at:
            g = coarse_gradient_norms(model, x, y, cfg.chunk_size)
            test_loss, test_acc = evaluate(model, splits.x_test, splits.y_test, cfg.chunk_size)
            records.append({"study": "repelled_point", "ste": get_ste(ste).name, "lr": float(lr),
                            "step": step, "train_loss": g["loss"], "train_acc": g["acc"],
                            "test_loss": test_loss, "test_acc": test_acc,
                            "grad_norm": g["grad_norm"], "grad_norm_first": g["grad_norm_first"],
                            "grad_norm_rest": g["grad_norm_rest"], "distance": _distance(model, theta0),
                            "weights_sha256": weights_sha256(model),
                            "diverged": not math.isfinite(g["loss"])})
            if not math.isfinite(g["loss"]):
                break
        if step == cfg.steps:
            break
        if batch >= n:
            rows = None
        else:
            if position + batch > n:
                order, position = torch.randperm(n, generator=gen), 0
            rows, position = order[position:position + batch], position + batch
        _accumulate(model, fast, x, y, rows, cfg.chunk_size)
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.sub_(p.grad, alpha=lr)
    return records


def _subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None or n >= x.shape[0]:
        return x, y
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx].contiguous(), y[idx]


def repelled_group(cfg: RepelledConfig, bits: int, seed: int, data: DatasetSplits | None = None) -> dict:
    """Pretrain θ₀ for (bits, seed), then every (lr, STE) continuation: ``{"records": [...]}``."""
    started = time.perf_counter()
    splits = data if data is not None else prepare_dataset(cfg.dataset, cfg.data_dir)
    x, y = _subset(splits.x_train, splits.y_train, cfg.train_subset, seed)
    model = make_model(cfg, bits, x.shape[1], splits.num_classes, torch.Generator().manual_seed(seed))
    train(model, x, y, TrainConfig(**{**cfg.pretrain, "seed": seed, "stop_at_perfect": False}))
    common = {"model": cfg.model, "bits": bits, "alpha": _act_alpha(model), "seed": seed,
              "pretrain_ste": get_ste(cfg.pretrain_ste).name, "n_train": int(x.shape[0]),
              "n_test": int(splits.y_test.shape[0]), "batch_size": cfg.batch_size, "steps": cfg.steps}
    train_loss, train_acc = evaluate(model, x, y, cfg.chunk_size)
    test_loss, test_acc = evaluate(model, splits.x_test, splits.y_test, cfg.chunk_size)
    records = [{"study": "repelled_start", **common, "train_loss": train_loss, "train_acc": train_acc,
                "test_loss": test_loss, "test_acc": test_acc, "weights_sha256": weights_sha256(model),
                **{f"pretrain_{k}": v for k, v in sorted(cfg.pretrain.items())},
                "seconds": time.perf_counter() - started}]
    for lr in cfg.lrs:
        for ste in cfg.stes:
            t0 = time.perf_counter()
            points = continue_training(model, ste, lr, splits, x, y, cfg, seed)
            seconds = time.perf_counter() - t0
            records += [{**common, **p, "seconds": seconds} for p in points]
    return {"records": records}


def _act_alpha(model: nn.Module) -> float:
    act = model.get_submodule("act")
    if not isinstance(act, QuantReLU):
        raise ConfigError("model", f"needs a QuantReLU activation, got {type(act).__name__}")
    return act.alpha


def run_repelled(cfg: RepelledConfig, data: DatasetSplits | None = None, progress: bool = False) -> list[dict]:
    """Every (bits, seed) group (:func:`repelled_group`), on ``cfg.workers`` processes
    (default: CPU count; 1 runs in this process)."""
    from coarsegrad.parallel import run_trials

    trials = [(repelled_group, {"cfg": cfg, "bits": b, "seed": s, "data": data})
              for b in cfg.bits for s in range(cfg.seeds)]
    workers = min(cfg.workers or os.cpu_count() or 1, len(trials))
    return [r for group in run_trials(trials, workers, "repelled", progress) for r in group["records"]]


def config_dict(cfg: RepelledConfig) -> dict:
    """The resolved config as JSON-ready data."""
    return asdict(cfg)
