"""``coarsegrad sweep``: run a sweep spec, or summarize a sweep folder.

    coarsegrad sweep SPEC.toml [--backend local|ray] [--ray-address ADDR] [--workers N]
                               [--out DIR] [--max-retries N] [--no-summary] [--quiet]
    coarsegrad sweep --summarize DIR

Exit code 0 when every trial has an ``ok`` result, 1 when some failed (they are in
trials.jsonl with their error; running the command again retries them), 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coarsegrad.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a sweep spec (local pool or Ray), or --summarize a sweep folder",
                       description="Run the trials of a TOML sweep spec (see docs/sweeps.md) that have no "
                                   "ok result in DIR yet; one line per trial in DIR/trials.jsonl.")
    p.add_argument("spec", nargs="?", help="sweep spec (TOML), e.g. configs/sweeps/synthetic_landscape.toml")
    p.add_argument("--summarize", metavar="DIR", default=None,
                   help="write DIR/summary.md and DIR/plots/ from DIR/trials.jsonl, run nothing")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: process pool on this machine; ray: one Ray task per trial (default: local)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this Ray cluster (e.g. 10.0.0.5:6379); default: start a local instance on 127.0.0.1")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local: processes (default: all cores); ray: trials in flight (default: the cluster's CPUs)")
    p.add_argument("--out", default=None, metavar="DIR", help="sweep folder (default: runs/sweep-<spec name>)")
    p.add_argument("--max-retries", type=int, default=2, metavar="N",
                   help="re-runs of a trial whose worker process died (default: 2)")
    p.add_argument("--no-summary", action="store_true", help="do not write summary.md and plots at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from coarsegrad.sweep import load_spec, run_sweep, summarize

    if args.summarize is not None:
        if args.spec is not None:
            raise ConfigError("summarize", "give a spec to run or --summarize DIR, not both")
        if not Path(args.summarize).is_dir():
            raise ConfigError("summarize", f"no such sweep folder: {args.summarize}")
        print(summarize(args.summarize, plots=_have_matplotlib()))
        return 0
    if args.spec is None:
        raise ConfigError("spec", "give a sweep spec (TOML) or --summarize DIR")
    spec = load_spec(args.spec)
    out = args.out or f"runs/sweep-{Path(args.spec).stem}"
    result = run_sweep(spec, out, backend=args.backend, workers=args.workers, ray_address=args.ray_address,
                       max_retries=args.max_retries, progress=not args.quiet)
    print(f"{result.out}: {result.total} trials: {result.ok} ok, {result.failed} failed, "
          f"{result.skipped} already done; {result.seconds:.1f}s ({args.backend})")
    if not args.no_summary and result.ok + result.skipped:
        print(summarize(result.out, plots=_have_matplotlib()))
    return 1 if result.failed else 0


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
