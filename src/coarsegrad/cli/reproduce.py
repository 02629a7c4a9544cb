"""``coarsegrad reproduce``: run the paper's experiments and write records, tables, plots."""

from __future__ import annotations

import argparse

from coarsegrad.errors import ConfigError
from coarsegrad.quant.staircase import DEFAULT_ROUNDING, ROUNDING_OFFSET
from coarsegrad.training.run import check_device
from coarsegrad.validate import MAX_WORKERS, optional_integer


def add_parser(sub: argparse._SubParsersAction) -> None:
    from coarsegrad.experiments.reproduce import DATASETS, EXPERIMENTS, FULL_EXPERIMENTS, QUICK_EXPERIMENTS

    p = sub.add_parser("reproduce", help="run the paper's experiments (records, tables, plots)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="few seeds and epochs, minutes on 2 CPUs (default)")
    mode.add_argument("--full", action="store_true", help="train to convergence, 3+ seeds")
    p.add_argument("--out", default="runs/reproduce", help="output directory (default: runs/reproduce)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST files (default: the usual places)")
    p.add_argument("--dataset", default="mnist", choices=tuple(DATASETS),
                   help="data of mnist_two_layer, lenet5 and full-quant (default: mnist; lenet5-ordering is "
                        "always mnist)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset of: {', '.join(EXPERIMENTS)} (default: "
                        f"{','.join(FULL_EXPERIMENTS)} with --full, {','.join(QUICK_EXPERIMENTS)} with --quick; "
                        f"synthetic-table: quick 3 seeds x 2000 steps, full 10 x 10000; lenet5-ordering: "
                        f"the 2019 STE ordering on LeNet-5, 2 bits; full-quant: MLP and LeNet-5 with quantized weights "
                        f"and activations, docs/full_quant.md)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--seeds", type=int, default=None, help="override the seeds per setting")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--rounding", default=DEFAULT_ROUNDING, metavar="|".join(ROUNDING_OFFSET),
                   help="staircase of synthetic, mnist_two_layer and lenet5 (default: nearest, under which the "
                        "paper's claim holds at every bit width; ceil: the authors' code and the records made "
                        "before; synthetic-table runs both)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    from coarsegrad.experiments.reproduce import reproduce

    optional_integer("seeds", args.seeds, lo=1, hi=1000)
    optional_integer("workers", args.workers, lo=1, hi=MAX_WORKERS)
    check_device(args.device)
    only = None if args.only is None else tuple(x.strip() for x in args.only.split(",") if x.strip())
    if only is not None and not only:
        raise ConfigError("only", "name at least one experiment")
    reproduce(full=args.full, out=args.out, workers=args.workers, progress=not args.quiet, seeds=args.seeds,
              only=only, data_dir=args.data_dir, device=args.device, dataset=args.dataset,
              rounding=args.rounding)
    return 0
