"""Long fuzz of every input loader: IDX files, TOML presets, sweep specs, CLI flags.

    python benchmarks/fuzz_inputs.py [--n 100000] [--seed 0] [--only idx,preset,spec,cli]

Each loader gets ``--n`` inputs: valid inputs mutated (bit flips, truncation, extension,
spliced hostile values) and generated from the real grammar (the real flag set, the real
config fields) with hostile values (NaN, inf, 1e308, 2^64, dates, arrays of tables,
nesting 1,000 deep, …). Parsing and validation only, nothing is trained. Every input
ends in one outcome class:

    ok        accepted
    expected  the documented refusal: DataError / ConfigError (InputError), or exit 2
              with exactly one line on stderr for the CLI
    BUG       anything else (another exception, a traceback, several lines)

Prints the counts per loader and class and exits 1 if any BUG was seen (the first few
are printed with their input). Also runs ``benchmarks/fuzz_loaders.py`` (tensor and
checkpoint files) with the same ``--n`` if that file exists.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable

HOSTILE_NUMBERS = ("nan", "inf", "-inf", "1e308", "-1e308", "1e-320", "5e-324", "0", "-0", "-1", "1", "2", "3",
                   "18446744073709551615", "9223372036854775808", "9223372036854775807", "65537", "1e6",
                   "0.5", "-0.5", "1.5", "0x10", "1_000", "2e9")
HOSTILE_STRINGS = ("", " ", "--", "-", "abc", "none", "null", "true", "false", "yes", "/proc/x", "/etc/passwd",
                   "/dev/null", "\x00", "é", "n" * 300, "../" * 50, "cuda", "cuda:9", "cpu", "mnist", "synthetic",
                   "lenet5", "mlp", "two_layer", "relu", "clipped_relu", "identity", "adam", "cosine", "trained")
TOML_VALUES = ("nan", "inf", "-inf", "+inf", "1e308", "1e-320", "0", "-1", "1", "2", "3", "18446744073709551615",
               "9223372036854775807", "0.5", "true", "false", '"yes"', '""', '"relu"', '"mlp"', '"lenet5"',
               '"synthetic"', '"adam"', '"cosine"', "1979-05-27", "1979-05-27T07:32:00Z", "07:32:00", "[]",
               "[1, 2]", "[0.1, inf]", '["relu", "identity"]', "{}", "{ start = 0.1, stop = 1, num = 3 }",
               "{ log_start = -1, log_stop = 400, num = 2 }", "{ start = 0, stop = 1, num = 1000000000 }",
               "[[1]]", "{ a = { b = { c = 1 } } }")


BASES = ('"synthetic"', '"nope"', "1", '"/proc/x"', '"' + "n" * 300 + '"', '"/etc"')


def _fields() -> dict[str, list[str]]:
    import dataclasses

    from coarsegrad.config import DataConfig, ModelConfig
    from coarsegrad.training.loop import TrainConfig

    return {section: [f.name for f in dataclasses.fields(cls)]
            for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))}


# ---------------------------------------------------------------- generators


def gen_idx(rng: random.Random) -> tuple[bytes, int]:
    """(file bytes, expected magic): a small valid IDX file, mutated, maybe gzipped."""
    magic = rng.choice((2049, 2051))
    n = rng.choice((1, 2, 3, 7))
    if magic == 2051:
        rows, cols = rng.choice(((28, 28), (1, 1), (2, 3), (0, 5)))
        head = struct.pack(">IIII", magic, n, rows, cols)
        body = bytes(rng.randrange(256) for _ in range(min(n * rows * cols, 4096)))
    else:
        head = struct.pack(">II", magic, n)
        body = bytes(rng.randrange(12) for _ in range(n))
    data = bytearray(head + body)
    for _ in range(rng.choice((0, 0, 1, 2, 5))):
        op = rng.randrange(6)
        if op == 0 and data:  # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncate
            del data[rng.randrange(len(data) + 1):]
        elif op == 2:  # extend
            data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif op == 3 and len(data) >= 8:  # a lying count or dimension
            at = rng.choice((4, 8, 12)) if len(data) >= 16 else 4
            data[at:at + 4] = struct.pack(">I", rng.choice((0, 1, 2**18 + 1, 2**31, 2**32 - 1, 1_369_000)))
        elif op == 4:  # random bytes
            data = bytearray(rng.randbytes(rng.randrange(0, 40)))
        elif op == 5 and len(data) >= 4:  # another magic
            data[0:4] = struct.pack(">I", rng.choice((2049, 2051, 0x0801, 0x0903, 0x1F8B0800)))
    blob = bytes(data)
    if rng.random() < 0.5:
        blob = gzip.compress(blob, mtime=0)
        if rng.random() < 0.3:  # corrupt or cut the gzip stream
            cut = bytearray(blob)
            if rng.random() < 0.5:
                del cut[rng.randrange(len(cut)):]
            elif cut:
                cut[rng.randrange(len(cut))] ^= 0xFF
            blob = bytes(cut)
    return blob, magic


def _toml_key(rng: random.Random, fields: dict[str, list[str]]) -> str:
    section = rng.choice(list(fields))
    return rng.choice(fields[section] + ["unknown_field", "seed", "alpha"])


def gen_preset(rng: random.Random, fields: dict[str, list[str]]) -> str:
    """TOML text of a preset: sections of real fields with hostile values, and structural oddities."""
    lines: list[str] = []
    kind = rng.randrange(10)
    if kind == 0:
        lines.append(rng.choice(("data = 1", "train = [1]", "model = 1979-05-27", "x = 1", "[[train]]\nlr = 1",
                                 "[[data]]", "[train.sub]\nx = 1")))
    if kind == 1:
        depth = rng.choice((3, 9, 50, 1000))
        lines.append("[train]\nlr = " + "[" * depth + "]" * depth)
    if kind == 2:
        return rng.randbytes(rng.randrange(60)).decode("latin-1")
    for section in rng.sample(list(fields), rng.randrange(0, 4)):
        lines.append(f"[{section}]")
        for _ in range(rng.randrange(0, 5)):
            name = rng.choice(fields[section] + ["unknown_field"])
            lines.append(f"{name} = {rng.choice(TOML_VALUES)}")
    return "\n".join(lines) + "\n"


def gen_spec(rng: random.Random, fields: dict[str, list[str]]) -> str:
    """TOML text of a sweep spec: the preset grammar plus seeds, axes, base and checkpoint_every."""
    text = gen_preset(rng, fields) if rng.random() < 0.5 else ""
    head = []
    if rng.random() < 0.5:
        head.append(f"seeds = {rng.choice(('1', '2', '0', '-1', '1000000000', '[0, 1]', '[1, 1]', '[18446744073709551616]', 'inf', '[]'))}")
    if rng.random() < 0.3:
        head.append(f"checkpoint_every = {rng.choice(TOML_VALUES)}")
    if rng.random() < 0.3:
        head.append("base = " + rng.choice(BASES))
    if rng.random() < 0.2:
        head.append(f"description = {rng.choice(TOML_VALUES)}")
    axes = ["[axes]"]
    for _ in range(rng.randrange(0, 4)):
        key = _toml_key(rng, fields)
        if rng.random() < 0.3:
            key = rng.choice(list(fields)) + "." + key
        axes.append(f"{key} = {rng.choice(TOML_VALUES)}")
    return "\n".join(head) + "\n" + text + ("\n".join(axes) + "\n" if len(axes) > 1 else "")


def cli_flags() -> dict[str, list[str]]:
    """{subcommand path: its option strings}, read from the real parser."""
    from coarsegrad.cli.main import build_parser

    def options(parser: argparse.ArgumentParser) -> list[str]:
        return sorted(s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help")

    found: dict[str, list[str]] = {}
    root = build_parser()
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = options(sub)
                for inner in sub._actions:
                    if isinstance(inner, argparse._SubParsersAction):
                        for name2, sub2 in inner.choices.items():
                            found[f"{name} {name2}"] = options(sub2)
    return found


def gen_argv(rng: random.Random, flags: dict[str, list[str]]) -> list[str]:
    """``train`` argv (most of the time; else another subcommand) from the real flag set with hostile values."""
    command = "train" if rng.random() < 0.7 else rng.choice(sorted(flags))
    argv = command.split()
    if command in ("eval", "export"):
        argv.append(rng.choice(("/nonexistent/run", "/proc/x", "", "/etc/passwd", "n" * 300)))
    for _ in range(rng.randrange(0, 6)):
        flag = rng.choice(flags[command] or ["--bogus"])
        value = rng.choice(HOSTILE_NUMBERS + HOSTILE_STRINGS)
        argv += [f"{flag}={value}"] if rng.random() < 0.2 else [flag, value]
    if rng.random() < 0.05:
        argv.append(rng.choice(("--", "-x", "--no-such-flag")))
    return argv


# ---------------------------------------------------------------- checks (parse and validate only)


def check_idx(path: Path, blob: bytes, magic: int) -> str:
    from coarsegrad.data.idx import read_idx
    from coarsegrad.errors import DataError

    path.write_bytes(blob)
    try:
        array = read_idx(path, magic)
    except DataError:
        return "expected"
    assert array.dtype.name == "uint8" and array.shape[0] >= 1
    return "ok"


def check_preset(path: Path, text: str) -> str:
    from coarsegrad.config import DataConfig, ModelConfig, dataclass_from_flags, load_preset
    from coarsegrad.errors import InputError
    from coarsegrad.training.loop import TrainConfig

    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:  # as `coarsegrad train --config` reads it
        preset = load_preset(str(path))
        for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
            dataclass_from_flags(cls, argparse.Namespace(), preset[section])
    except InputError:
        return "expected"
    return "ok"


def check_spec(path: Path, text: str) -> str:
    import json

    from coarsegrad.errors import InputError
    from coarsegrad.sweep import load_spec

    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        spec = load_spec(path)
        trials = spec.trials()
    except InputError:
        return "expected"
    json.dumps(spec.as_dict(), allow_nan=False)  # what the driver writes must be strict JSON
    for trial in trials[:20]:
        json.dumps(trial.config, allow_nan=False)
    return "ok"


def check_argv(argv: list[str]) -> str:
    """Parse ``argv`` with the real parser and validate it as the command would (no run)."""
    from coarsegrad.cli import train as train_cmd
    from coarsegrad.cli.main import build_parser, describe

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            code = exc.code
        else:
            code = 0
            if args.command == "train":
                try:
                    train_cmd.resolve(args)
                except Exception as exc:  # noqa: BLE001 - classified below
                    code, line = describe(exc)
                    sys.stderr.write(line + "\n")
    lines = err.getvalue().strip().splitlines()
    if code == 0:
        return "ok"
    if code == 2 and len(lines) == 1 and "Traceback" not in lines[0]:
        return "expected"
    raise AssertionError(f"exit {code}, stderr {lines[:3]!r}")


# ---------------------------------------------------------------- driver


def fuzz(name: str, n: int, make: Callable[[], object], check: Callable[[object], str],
         counts: Counter, bugs: list) -> None:
    for _ in range(n):
        case = make()
        try:
            outcome = check(case)
        except Exception:  # noqa: BLE001 - every other exception is a bug
            outcome = "BUG"
            if len(bugs) < 5:
                bugs.append((name, repr(case)[:300], traceback.format_exc(limit=4)[-1500:]))
        counts[name, outcome] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="inputs per loader (default 100000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="idx,preset,spec,cli")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    fields = _fields()
    flags = cli_flags()
    counts: Counter = Counter()
    bugs: list = []
    started = time.perf_counter()
    home = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.chdir(folder)  # a CLI default path must never land in the repository
        loaders = {
            "idx": (lambda: gen_idx(rng), lambda c: check_idx(folder / "f.idx", *c)),
            "preset": (lambda: gen_preset(rng, fields), lambda c: check_preset(folder / "p.toml", c)),
            "spec": (lambda: gen_spec(rng, fields), lambda c: check_spec(folder / "s.toml", c)),
            "cli": (lambda: gen_argv(rng, flags), check_argv),
        }
        for name in args.only.split(","):
            make, check = loaders[name]
            fuzz(name, args.n, make, check, counts, bugs)
            print(f"{name:>7}: " + ", ".join(f"{c} {counts[name, c]}" for c in ("ok", "expected", "BUG")), flush=True)
        os.chdir(home)
    print(f"{sum(counts.values())} inputs in {time.perf_counter() - started:.1f}s")
    for name, case, tb in bugs:
        print(f"\nBUG in {name}: {case}\n{tb}")
    code = 1 if bugs else 0
    loaders_script = Path(__file__).resolve().parent / "fuzz_loaders.py"
    if loaders_script.is_file():
        extra = ["--n", str(args.n)] if "--n" in loaders_script.read_text(encoding="utf-8") else []
        code |= subprocess.run([sys.executable, str(loaders_script), *extra], check=False).returncode
    return code


if __name__ == "__main__":
    raise SystemExit(main())
