"""``coarsegrad reproduce``: run the paper's experiments and write records, tables, plots."""

from __future__ import annotations

import argparse

from coarsegrad.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="run the paper's experiments (records, tables, plots)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="few seeds and steps (default)")
    mode.add_argument("--full", action="store_true", help="train to convergence, more seeds")
    p.add_argument("--out", default="runs/reproduce", help="output directory")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--seeds", type=int, default=10, help="seeds per setting (default: 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from coarsegrad.experiments.reproduce import reproduce

    if args.seeds < 1:
        raise ConfigError("seeds", f"must be >= 1, got {args.seeds}")
    if args.workers is not None and args.workers < 1:
        raise ConfigError("workers", f"must be >= 1, got {args.workers}")
    reproduce(full=args.full, out=args.out, workers=args.workers, progress=not args.quiet, seeds=args.seeds)
    return 0
