"""``coarsegrad`` entry point: subcommands, one clear error line, exit codes.

Exit codes: 0 success, 1 a run failed (e.g. diverged) or an internal error, 2 bad input
(flags, config, data, paths), 130 interrupted, 141 output closed. Nothing prints a
traceback unless ``--debug`` is given: every error is one line on stderr.
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
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of any error (also accepted after the subcommand)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``coarsegrad ARGV``; returns the exit code (module docstring).

    ``--debug`` (anywhere on the line) re-raises any exception with its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0), as a return value
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.run(args) or 0)
    except Exception as exc:
        if debug:
            raise
        code, line = describe(exc)
        if code == 141:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        else:
            sys.stderr.write(f"coarsegrad {args.command}: {line}\n")
        return code
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("coarsegrad: interrupted\n")
        return 130


def describe(exc: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an exception out of a command: 2 bad input (InputError,
    an OS error on a path the user gave, a config nested too deep), 1 a failed run
    (diverged) or an internal error (with a pointer to ``--debug``), 141 a broken pipe."""
    if isinstance(exc, InputError):
        return 2, f"error: {exc}"
    if isinstance(exc, TrainingDiverged):
        return 1, str(exc)
    if isinstance(exc, BrokenPipeError):  # e.g. `coarsegrad eval ... | head`
        return 141, "output closed"
    if isinstance(exc, OSError):  # permissions, existing files, read-only or special paths, long names
        where = f"{exc.filename}: " if exc.filename is not None else ""
        what = exc.strerror or str(exc) or type(exc).__name__
        return 2, f"error: {where}{what}"
    if isinstance(exc, RecursionError):
        return 2, "error: input nested too deeply"
    message = " ".join(str(exc).split())[:300]
    return 1, f"internal error: {type(exc).__name__}: {message} (run again with --debug for the traceback)"


if __name__ == "__main__":
    raise SystemExit(main())
