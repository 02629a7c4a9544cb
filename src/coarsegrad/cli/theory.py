"""``coarsegrad theory {angles,geometry,landscape,repelled}``: measure how good each STE's coarse gradient is.

Each study writes to ``--out`` (default ``runs/theory/<study>``, relative to the current folder;
the committed records change only with an explicit ``--out results/theory/<study>``): results.json (a list
of flat records), config.json (the resolved study config and the command), env.json
(:func:`coarsegrad.io.records.environment`), a markdown report and PNG plots made only
from results.json (:mod:`coarsegrad.theory.runner`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coarsegrad.errors import ConfigError
from coarsegrad.theory.runner import STUDIES

HELP = {"angles": "cos(E[g_μ], ∂f/∂w) over θ, spurious minimum, trajectories",
        "geometry": "track the convex-hull condition during training",
        "landscape": "success-rate maps over units × step size × bits × STE",
        "repelled": "MNIST: continue from a good minimum with each STE (is identity repelled?)"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("theory", help="exact/Monte Carlo STE diagnostics, geometric condition, landscape maps")
    studies = p.add_subparsers(dest="study", required=True)
    for name in STUDIES:
        q = studies.add_parser(name, help=HELP[name])
        q.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
        q.add_argument("--out", default=None,
                       help=f"output folder (default runs/theory/{name}; the committed record: --out results/theory/{name})")
        q.add_argument("--from-records", action="store_true",
                       help="only remake the tables and plots from OUT/results.json")
        if name in ("angles", "landscape", "repelled"):
            q.add_argument("--bits", type=int, nargs="+", default=None, help="bit widths")
            q.add_argument("--stes", nargs="+", default=None, help="STE names")
        if name == "angles":
            q.add_argument("--samples", type=int, default=None, help="Monte Carlo samples per point")
        if name in ("geometry", "landscape", "repelled"):
            q.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
            q.add_argument("--steps", type=int, default=None, help="step budget per run")
        if name in ("landscape", "repelled"):
            q.add_argument("--workers", type=int, default=None, help="processes (default: cpu count)")
        if name == "landscape":
            q.add_argument("--units", type=int, nargs="+", default=None, help="units per class")
            q.add_argument("--lrs", type=float, nargs="+", default=None, help="step sizes")
        if name == "repelled":
            q.add_argument("--lrs", type=float, nargs="+", default=None, help="continuation step sizes")
            q.add_argument("--model", choices=("mlp", "two_layer"), default=None, help="network (default mlp)")
            q.add_argument("--hidden", type=int, default=None, help="MLP hidden units (default 256)")
            q.add_argument("--batch-size", dest="batch_size", type=int, default=None,
                           help="continuation batch size (default 128)")
            q.add_argument("--train-subset", dest="train_subset", type=int, default=None,
                           help="use this many training images (default all)")
            q.add_argument("--data-dir", dest="data_dir", default=None, help="folder with the MNIST files")
        q.set_defaults(run=run)


OPTIONS = {"angles": ("bits", "stes", "samples"), "geometry": ("seeds", "steps"),
           "landscape": ("bits", "stes", "seeds", "steps", "workers", "units", "lrs"),
           "repelled": ("bits", "stes", "seeds", "steps", "workers", "lrs", "model", "hidden", "batch_size",
                        "train_subset", "data_dir")}


def _overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _command(args: argparse.Namespace, overrides: dict) -> str:
    """The equivalent command line (for the record)."""
    parts = ["coarsegrad", "theory", args.study] + (["--quick"] if args.quick else [])
    if args.out:
        parts += ["--out", str(args.out)]
    for name, value in overrides.items():
        values = value if isinstance(value, tuple) else (value,)
        parts += [f"--{name.replace('_', '-')}", *map(str, values)]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from coarsegrad.theory import runner

    study = args.study
    if study not in STUDIES:
        raise ConfigError("study", f"must be one of {', '.join(STUDIES)}, got {study!r}")
    out = Path(args.out or f"runs/theory/{study}")
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{out} exists and is not a folder")
    if args.from_records:
        runner.render(study, out, runner.load_records(out))
        print(f"{out}: tables and plots remade from results.json")
        return 0
    kw = _overrides(args, OPTIONS[study])
    cfg = runner.make_config(study, args.quick, **kw)
    records = runner.run_study(study, cfg, out, _command(args, kw), quick=args.quick,
                               progress=study == "repelled")
    seconds = json.loads((out / "config.json").read_text())["seconds"]
    print(f"{out}: {len(records)} records in {seconds:.1f}s")
    return 0
