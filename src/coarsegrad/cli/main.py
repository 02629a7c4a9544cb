"""``coarsegrad`` entry point: subcommands, one clear error line, exit codes.

Exit codes: 0 success, 1 a run failed (e.g. diverged), 2 bad input (flags, config,
data). Bad input never prints a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from coarsegrad.cli import bench as bench_cmd
from coarsegrad.cli import data as data_cmd
from coarsegrad.cli import env as env_cmd
from coarsegrad.cli import eval as eval_cmd
from coarsegrad.cli import export as export_cmd
from coarsegrad.cli import reproduce as reproduce_cmd
from coarsegrad.cli import sweep as sweep_cmd
from coarsegrad.cli import theory as theory_cmd
from coarsegrad.cli import train as train_cmd
from coarsegrad.errors import InputError, TrainingDiverged

SUBCOMMANDS = (train_cmd, env_cmd, reproduce_cmd, data_cmd, export_cmd, eval_cmd, theory_cmd, bench_cmd, sweep_cmd)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="coarsegrad", description="Quantized neural nets trained by coarse gradients.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0), as a return value
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        sys.stderr.write(f"coarsegrad {args.command}: error: {exc}\n")
        return 2
    except TrainingDiverged as exc:
        sys.stderr.write(f"coarsegrad {args.command}: {exc}\n")
        return 1
    except BrokenPipeError:  # e.g. `coarsegrad eval ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        sys.stderr.write("coarsegrad: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
