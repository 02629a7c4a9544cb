"""Property test of the CLI: random argv from the real flag set with hostile values, run
in-process through ``main(argv)`` (one training step, a temporary --out, no image data
reachable, a time limit). Every run ends in exit 0, or exit 2 with exactly one line on
stderr; never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import io
import signal
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coarsegrad.cli.main import build_parser, main
from coarsegrad.data import datasets

NUMBERS = ("nan", "inf", "-inf", "1e308", "1e-320", "0", "-1", "1", "2", "3", "18446744073709551615",
           "9223372036854775808", "65537", "1e6", "0.5", "0x10", "1_000")
STRINGS = ("", "--", "abc", "none", "true", "yes", "/proc/x", "/etc/passwd", "/dev/null", "n" * 300, "cuda",
           "cuda:9", "cpu", "mnist", "synthetic", "lenet5", "mlp", "two_layer", "relu", "identity", "adam",
           "cosine", "trained")
# Flags whose valid values start long jobs or read real data: the test pins them.
PINNED = {"--steps", "--epochs", "--resume", "--quiet"}


def _train_flags() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {s for a in sub.choices["train"]._actions for s in a.option_strings if s.startswith("--")}
    return sorted(flags - PINNED - {"--help"})


FLAGS = _train_flags()


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Timeout


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("COARSEGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.chdir(tmp_path)  # a default --out lands here, never in the repository
    return tmp_path


def _run(argv: list[str], limit: float = 30.0) -> tuple[int, list[str]]:
    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue().strip().splitlines()


@settings(max_examples=250, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FLAGS), st.sampled_from(NUMBERS + STRINGS), st.booleans()), max_size=5))
def test_train_flags_exit_0_or_one_line_exit_2(isolated, pairs):
    with tempfile.TemporaryDirectory(dir=isolated) as out:
        argv = ["train", "--out", out]
        for flag, value, joined in pairs:
            argv += [f"{flag}={value}"] if joined else [flag, value]
        argv += ["--steps", "1", "--quiet"]
        code, lines = _run(argv)
    assert code in (0, 2), (argv, code, lines)
    if code == 2:
        assert len(lines) == 1 and "Traceback" not in lines[0], (argv, lines)


@pytest.mark.parametrize("argv", [
    ["train", "--out", "/proc/x"], ["train", "--out", "/etc/passwd"], ["train", "--out", "n" * 5000],
    ["train", "--seed", "18446744073709551615"], ["train", "--dim", "100000"], ["train", "--model", "lenet5"],
    ["train", "--device=--"], ["train", "--alpha", "1e308"], ["train", "--config", "/proc/x"],
    ["train", "--resume", "/proc/x"], ["train", "--resume", "/nonexistent"], ["train", "--checkpoint-every", "-1"],
    ["eval", "/nonexistent"], ["eval", "/proc/x"], ["eval", "/etc/passwd"], ["export", "/nonexistent"],
    ["export", "/etc/passwd"], ["data", "list", "--data-dir", "/proc/x/y"], ["data", "download", "nope"],
    ["sweep"], ["sweep", "/proc/x"], ["sweep", "--summarize", "/proc/x"], ["theory", "angles", "--samples", "-1"],
    ["theory", "landscape", "--lrs", "nan"], ["theory", "landscape", "--units", "100000"],
    ["theory", "angles", "--from-records", "--out", "/proc/x"], ["reproduce", "--device=--"],
    ["reproduce", "--seeds", "100000000"], ["reproduce", "--only", ","], ["bench", "--samples", "0"],
    ["bench", "--inference", "/nonexistent"],
])
def test_hostile_inputs_on_every_command_are_one_line_exit_2(isolated, argv):
    code, lines = _run(argv + (["--quiet"] if argv[0] in ("train",) else []))
    assert code == 2 and len(lines) == 1 and "Traceback" not in lines[0], (code, lines)


def test_toml_type_errors_are_one_line_exit_2(isolated):
    cases = ["data = 1\n", "[[train]]\nlr = 1\n", "[train]\nlr = " + "[" * 1000 + "]" * 1000 + "\n",
             "[train]\nlr = 1979-05-27\n", "[model]\nbatchnorm = 1e6\n", "[train]\nstop_at_perfect = \"yes\"\n",
             "[train]\nlr = inf\n", "\x00\xff"]
    for i, text in enumerate(cases):
        path = Path(isolated) / f"p{i}.toml"
        path.write_bytes(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)
        code, lines = _run(["train", "--config", str(path), "--steps", "1", "--quiet", "--out", str(isolated / "o")])
        assert code == 2 and len(lines) == 1, (text[:40], lines)
        code, lines = _run(["sweep", str(path), "--quiet", "--out", str(isolated / f"s{i}")])
        assert code == 2 and len(lines) == 1, (text[:40], lines)


def test_unexpected_errors_are_one_line_exit_1_and_debug_shows_the_traceback(isolated, monkeypatch):
    from coarsegrad.cli import train as train_cmd

    def boom(args: argparse.Namespace) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(train_cmd, "resolve", boom)
    code, lines = _run(["train", "--quiet"])
    assert code == 1 and len(lines) == 1 and "internal error: RuntimeError: boom second line" in lines[0]
    assert "--debug" in lines[0]
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "train", "--quiet"])
    with pytest.raises(RuntimeError, match="boom"):
        main(["train", "--quiet", "--debug"])


def test_keyboard_interrupt_is_exit_130(isolated, monkeypatch):
    from coarsegrad.cli import train as train_cmd

    def interrupted(args: argparse.Namespace) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cmd, "resolve", interrupted)
    code, lines = _run(["train", "--quiet"])
    assert code == 130 and lines == ["coarsegrad: interrupted"]


def test_a_range_error_in_a_spec_is_a_failed_trial_not_a_crash(isolated):
    """Documented: a well-typed value a config rejects (dim above its bound) fails its trials."""
    path = Path(isolated) / "spec.toml"
    path.write_text("[data]\ndim = 100000\n")
    code, lines = _run(["sweep", str(path), "--quiet", "--no-summary", "--workers", "1", "--out", str(isolated / "s")])
    assert code == 1 and "1 failed" not in "".join(lines) and "Traceback" not in "".join(lines)
