"""``coarsegrad train``: one run, with flags generated from the config dataclasses.

Writes a run record to ``--out``: config.json, env.json, metrics.jsonl,
model.safetensors and summary.json.
"""

from __future__ import annotations

import argparse
import time

from coarsegrad.config import (
    DataConfig,
    ModelConfig,
    add_dataclass_flags,
    dataclass_from_flags,
    load_preset,
)
from coarsegrad.run import run_training
from coarsegrad.train import TrainConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one network and write a run record")
    p.add_argument("--out", default=None, help="run directory (default: runs/train-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--config", default=None, help="TOML preset (e.g. configs/synthetic.toml); flags override it")
    add_dataclass_flags(p, DataConfig, "data")
    add_dataclass_flags(p, ModelConfig, "model")
    add_dataclass_flags(p, TrainConfig, "training")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    preset = load_preset(args.config) if args.config else {}
    data = dataclass_from_flags(DataConfig, args, preset.get("data"))
    model = dataclass_from_flags(ModelConfig, args, preset.get("model"))
    train_preset = dict(preset.get("train", {}))
    if args.epochs is not None or args.steps is not None:  # a flag replaces the preset's budget
        train_preset.pop("steps", None)
        train_preset.pop("epochs", None)
    train = dataclass_from_flags(TrainConfig, args, train_preset)
    out = args.out or time.strftime("runs/train-%Y%m%d-%H%M%S")
    summary = run_training(data, model, train, out, progress=not args.quiet)
    print(f"{out}: steps={summary['steps']} loss={summary['final_loss']:.4g} "
          f"train_acc={summary['train_acc']:.4f} perfect_step={summary['perfect_step']}")
    return 0
