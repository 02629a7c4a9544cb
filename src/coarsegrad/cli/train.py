"""``coarsegrad train``: one run, with flags generated from the config dataclasses.

Writes a run record to ``--out``: config.json, env.json, metrics.jsonl,
model.safetensors and summary.json. ``--checkpoint-every N`` also keeps an atomic
checkpoint.safetensors; ``--resume DIR`` continues that run from it, bit-identically,
with DIR/config.json as the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from coarsegrad.config import (
    DataConfig,
    ModelConfig,
    add_dataclass_flags,
    dataclass_from_flags,
    load_preset,
)
from coarsegrad.errors import ConfigError
from coarsegrad.io.results import RunSummary
from coarsegrad.training.loop import TrainConfig
from coarsegrad.training.run import check_device, load_run_config, run_training
from coarsegrad.validate import MAX_STEPS, optional_integer


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train one network and write a run record")
    p.add_argument("--out", default=None, help="run directory (default: runs/train-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--config", default=None, help="TOML preset (e.g. configs/synthetic.toml); flags override it")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="write DIR/checkpoint.safetensors every N steps (default: never; on --resume: as before)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run in DIR from its latest checkpoint, with DIR/config.json")
    add_dataclass_flags(p, DataConfig, "data")
    add_dataclass_flags(p, ModelConfig, "model")
    add_dataclass_flags(p, TrainConfig, "training")
    p.set_defaults(run=run)


def resolve(args: argparse.Namespace) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """The validated configs of ``coarsegrad train ARGS`` (preset, then flags), and every
    other flag checked; nothing is read but the preset, nothing is written."""
    optional_integer("checkpoint_every", args.checkpoint_every, lo=0, hi=MAX_STEPS)
    check_device(args.device)
    preset = load_preset(args.config) if args.config else {}
    data = dataclass_from_flags(DataConfig, args, preset.get("data"))
    model = dataclass_from_flags(ModelConfig, args, preset.get("model"))
    train_preset = dict(preset.get("train", {}))
    if args.epochs is not None or args.steps is not None:  # a flag replaces the preset's budget
        train_preset.pop("steps", None)
        train_preset.pop("epochs", None)
    train = dataclass_from_flags(TrainConfig, args, train_preset)
    return data, model, train


def run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        optional_integer("checkpoint_every", args.checkpoint_every, lo=0, hi=MAX_STEPS)
        check_device(args.device)
        return _resume(args)
    data, model, train = resolve(args)
    out = args.out or time.strftime("runs/train-%Y%m%d-%H%M%S")
    summary = run_training(data, model, train, out, progress=not args.quiet,
                           checkpoint_every=args.checkpoint_every or 0, device=args.device)
    _report(out, summary)
    return 0


def _resume(args: argparse.Namespace) -> int:
    given = [f.name for cls in (DataConfig, ModelConfig, TrainConfig) for f in dataclasses.fields(cls)
             if getattr(args, f.name, None) is not None]
    if given or args.config or (args.out and Path(args.out) != Path(args.resume)):
        flag = "--" + (given[0].replace("_", "-") if given else "config" if args.config else "out")
        raise ConfigError("resume", f"takes the config from {args.resume}/config.json; drop {flag}")
    data, model, train = load_run_config(args.resume)
    summary = run_training(data, model, train, args.resume, progress=not args.quiet,
                           checkpoint_every=args.checkpoint_every, resume=True, device=args.device)
    _report(args.resume, summary)
    return 0


def _report(out: str, summary: RunSummary) -> None:
    test = "" if summary.test_acc is None else f" test_acc={summary.test_acc:.4f}"
    print(f"{out}: steps={summary.steps} loss={summary.final_loss:.4g} "
          f"train_acc={summary.train_acc:.4f}{test} perfect_step={summary.perfect_step}")
