"""``coarsegrad train``: one run, with flags generated from the config dataclasses.

Writes a run record to ``--out``: config.json, env.json, metrics.jsonl,
model.safetensors and summary.json (the final weights on the whole training and test
splits). Fields not set by a flag or ``--config`` take the defaults of the data
(:func:`coarsegrad.config.data_defaults`: the paper's full-batch setting for
``synthetic``, mini-batch momentum SGD for image data), recorded in config.json.
``--checkpoint-every N`` also keeps an atomic checkpoint.safetensors; ``--resume DIR``
continues that run from it, bit-identically, with DIR/config.json as the config.
Ctrl-C (SIGINT) or SIGTERM stops after the current step and saves a checkpoint, the
model and a summary (status ``interrupted``); exit code 130 / 143.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from coarsegrad.config import (
    DataConfig,
    ModelConfig,
    add_dataclass_flags,
    data_defaults,
    dataclass_from_flags,
    load_preset,
    overlay,
)
from coarsegrad.errors import ConfigError
from coarsegrad.io.results import RunSummary
from coarsegrad.training.loop import OPTIMIZERS, TrainConfig
from coarsegrad.training.run import check_device, load_run_config, run_training
from coarsegrad.validate import MAX_STEPS, MAX_WORKERS, optional_integer

SMALL_PROBLEM = 1 << 20  # rows × features below which one thread is fastest (no parallel work to share)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train one network and write a run record",
                       description="Train one network and write a run record. Defaults depend on --data: "
                                   "synthetic = the paper's setting (configs/synthetic.toml: full-batch, lr 1.0, "
                                   "<= 10000 steps, stop at 100%% training accuracy); mnist, fashion-mnist, "
                                   "kmnist = configs/images.toml (MLP, momentum SGD, batch 128, lr 0.1, cosine, "
                                   "3 epochs). Flags and --config override them.")
    p.add_argument("--out", default=None, help="run directory (default: runs/train-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--config", default=None, help="TOML preset (e.g. configs/synthetic.toml); flags override it")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="write DIR/checkpoint.safetensors every N steps (default: never; on --resume: as before)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run in DIR from its latest checkpoint, with DIR/config.json")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help=f"torch CPU threads (default: 1 for small problems, under {SMALL_PROBLEM} input values, "
                        "e.g. the synthetic set; all cores otherwise); recorded in env.json")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log loss, accuracy and learning rate to OUT/tensorboard (needs the tensorboard extra)")
    add_dataclass_flags(p, DataConfig, "data")
    add_dataclass_flags(p, ModelConfig, "model")
    add_dataclass_flags(p, TrainConfig, "training",
                        f"How to train; optimizer: {', '.join(OPTIMIZERS)}; schedule: constant, cosine. "
                        "The defaults shown are TrainConfig's; --data fills unset fields first (see above).")
    p.set_defaults(run=run)


def default_threads(data: DataConfig) -> int:
    """1 thread for a small problem (rows × features < :data:`SMALL_PROBLEM`), else all cores."""
    if data.data == "synthetic" and data.num_classes * data.samples_per_class * data.dim < SMALL_PROBLEM:
        return 1
    return os.cpu_count() or 1


class StopOnSignal:
    """While active, SIGINT/SIGTERM ask the loop to stop after the current step (calling
    the object says whether one came); a second signal aborts at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            self.__exit__()
            sys.stderr.write("coarsegrad train: aborted; this step was not saved (the last checkpoint, if any, was)\n")
            raise KeyboardInterrupt
        self.signum = signum
        sys.stderr.write(f"\ncoarsegrad train: {signal.Signals(signum).name}: saving a checkpoint after this step "
                         "(send it again to abort without saving)\n")


def resolve_configs(args: argparse.Namespace) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """Flags over ``--config`` over the data's defaults (:func:`data_defaults`), field by field."""
    preset = load_preset(args.config) if args.config else {}
    data_name = args.data or preset.get("data", {}).get("data", "synthetic")
    base = overlay(data_defaults(data_name), preset)
    train_base = dict(base["train"])
    if args.epochs is not None or args.steps is not None:  # a flag replaces the preset's budget
        train_base.pop("steps", None)
        train_base.pop("epochs", None)
    return (dataclass_from_flags(DataConfig, args, base["data"]), dataclass_from_flags(ModelConfig, args, base["model"]),
            dataclass_from_flags(TrainConfig, args, train_base))


def check_flags(args: argparse.Namespace) -> None:
    """The flags that are not config fields, checked before anything runs."""
    optional_integer("checkpoint_every", args.checkpoint_every, lo=0, hi=MAX_STEPS)
    optional_integer("threads", args.threads, lo=1, hi=MAX_WORKERS)
    check_device(args.device)


def resolve(args: argparse.Namespace) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """The validated configs of ``coarsegrad train ARGS`` and every other flag checked;
    nothing is read but the presets, nothing is written."""
    check_flags(args)
    return resolve_configs(args)


def run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        check_flags(args)
        return _resume(args)
    data, model, train = resolve(args)
    out = args.out or time.strftime("runs/train-%Y%m%d-%H%M%S")
    return _train(args, data, model, train, out, resume=False, checkpoint_every=args.checkpoint_every or 0)


def _train(args: argparse.Namespace, data: DataConfig, model: ModelConfig, train: TrainConfig, out: str,
           *, resume: bool, checkpoint_every: int | None) -> int:
    import torch

    if args.tensorboard:
        from coarsegrad.training.metrics import TensorBoardLog  # fails fast (exit 2) without the extra
        del TensorBoardLog
    torch.set_num_threads(args.threads or default_threads(data))
    with StopOnSignal() as stop:
        summary = run_training(data, model, train, out, progress=not args.quiet, checkpoint_every=checkpoint_every,
                               resume=resume, device=args.device, stop=stop, tensorboard=args.tensorboard)
    if summary.status == "interrupted":
        print(f"{out}: interrupted at step {summary.steps}; checkpoint, model and summary saved in {out}; "
              f"continue with: coarsegrad train --resume {out}")
    else:
        _report(out, summary)
    return 0 if stop.signum is None else 128 + stop.signum


def _resume(args: argparse.Namespace) -> int:
    given = [f.name for cls in (DataConfig, ModelConfig, TrainConfig) for f in dataclasses.fields(cls)
             if getattr(args, f.name, None) is not None]
    if given or args.config or (args.out and Path(args.out) != Path(args.resume)):
        flag = "--" + (given[0].replace("_", "-") if given else "config" if args.config else "out")
        raise ConfigError("resume", f"takes the config from {args.resume}/config.json; drop {flag}")
    data, model, train = load_run_config(args.resume)
    return _train(args, data, model, train, args.resume, resume=True, checkpoint_every=args.checkpoint_every)


def _report(out: str, summary: RunSummary) -> None:
    test = "" if summary.test_acc is None else f" test_loss={summary.test_loss:.4g} test_acc={summary.test_acc:.4f}"
    print(f"{out}: steps={summary.steps} final weights: loss={summary.final_loss:.4g} "
          f"train_acc={summary.train_acc:.4f}{test} perfect_step={summary.perfect_step}")
