"""Property tests: any TOML preset or sweep spec built from the real field names and hostile
values loads, or is refused with one ConfigError; what loads is strict JSON (finite)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coarsegrad.config import DataConfig, ModelConfig, dataclass_from_flags, load_preset
from coarsegrad.errors import InputError
from coarsegrad.sweep import load_spec
from coarsegrad.training.loop import TrainConfig

SETTINGS = settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
CLASSES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
FIELDS = {section: [f.name for f in dataclasses.fields(cls)] + ["unknown"] for section, cls in CLASSES.items()}
VALUES = ("nan", "inf", "-inf", "1e308", "1e-320", "0", "-1", "1", "2", "18446744073709551615", "0.5", "true",
          "false", '"yes"', '""', '"relu"', '"mlp"', '"lenet5"', '"synthetic"', '"adam"', "1979-05-27",
          "07:32:00", "[]", "[1, 2]", "[0.1, inf]", "{}", "{ start = 0.1, stop = 1, num = 3 }",
          "{ log_start = -1, log_stop = 400, num = 2 }", "{ start = 0, stop = 1, num = 1000000000 }", "[[1]]")
STRUCTURE = ("", "data = 1", "train = [1]", "[[train]]\nlr = 1", "[train.sub]\nx = 1", "x = 1",
             "[model]\nalpha = " + "[" * 1000 + "]" * 1000, "[train]\nlr = " + "[" * 30 + "]" * 30)


@st.composite
def tables(draw: st.DrawFn, extra: tuple[str, ...] = ()) -> str:
    lines = [draw(st.sampled_from(STRUCTURE))] if draw(st.booleans()) else []
    lines += list(extra)
    for section in draw(st.lists(st.sampled_from(sorted(CLASSES)), unique=True, max_size=3)):
        lines.append(f"[{section}]")
        for name in draw(st.lists(st.sampled_from(FIELDS[section]), unique=True, max_size=4)):
            lines.append(f"{name} = {draw(st.sampled_from(VALUES))}")
    return "\n".join(lines) + "\n"


@st.composite
def specs(draw: st.DrawFn) -> str:
    head = []
    if draw(st.booleans()):
        head.append("seeds = " + draw(st.sampled_from(("1", "2", "0", "1000000000", "[0, 1]", "[1, 1]", "inf",
                                                        "[18446744073709551616]"))))
    if draw(st.booleans()):
        head.append("base = " + draw(st.sampled_from(('"synthetic"', '"nope"', "1", '"/proc/x"'))))
    text = draw(tables(tuple(head)))
    axes = draw(st.lists(st.tuples(st.sampled_from(sorted({f for fs in FIELDS.values() for f in fs})),
                                   st.sampled_from(VALUES)), max_size=3, unique_by=lambda t: t[0]))
    if axes:
        text += "[axes]\n" + "".join(f"{k} = {val}\n" for k, val in axes)
    return text


def _write(text: str) -> tuple[tempfile.TemporaryDirectory, Path]:
    tmp = tempfile.TemporaryDirectory()
    path = Path(tmp.name) / "f.toml"
    path.write_text(text, encoding="utf-8")
    return tmp, path


@SETTINGS
@given(tables())
def test_presets_load_or_raise_one_input_error(text):
    tmp, path = _write(text)
    with tmp:
        try:
            preset = load_preset(str(path))
            configs = [dataclass_from_flags(cls, argparse.Namespace(), preset[s]) for s, cls in CLASSES.items()]
        except InputError:
            return
        json.dumps([dataclasses.asdict(c) for c in configs], allow_nan=False)


@SETTINGS
@given(specs())
def test_specs_load_or_raise_one_input_error(text):
    tmp, path = _write(text)
    with tmp:
        try:
            spec = load_spec(path)
            trials = spec.trials()
        except InputError:
            return
        json.dumps(spec.as_dict(), allow_nan=False)  # what the driver writes to sweep.json
        for trial in trials:
            json.dumps(trial.config, allow_nan=False)  # what every result line carries
