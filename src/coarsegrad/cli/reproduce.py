"""``coarsegrad reproduce``: run the paper's experiments and write records, tables, plots."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="run the paper's experiments (records, tables, plots)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="few seeds and steps (default)")
    mode.add_argument("--full", action="store_true", help="train to convergence, more seeds")
    p.add_argument("--out", default="runs/reproduce", help="output directory")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from coarsegrad.experiments.reproduce import reproduce

    reproduce(full=args.full, out=args.out, workers=args.workers)
    return 0
