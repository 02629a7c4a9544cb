"""Sweep specs: a base config, the axes to sweep and the seeds, read from TOML.

A spec (see ``docs/sweeps.md``)::

    base = "synthetic"          # optional: a preset name or TOML file (relative to the spec)
    seeds = 5                   # n → seeds 0..n−1, or a list [0, 3, 7]
    checkpoint_every = 0        # optional: trial checkpoints every N steps (resumed on retry)

    [train]                     # optional [data]/[model]/[train] tables override the base
    steps = 1000

    [axes]                      # field = values; "section.field" also accepted
    units_per_class = [5, 10, 20]
    ste = ["relu", "clipped_relu"]
    lr = { log_start = -1, log_stop = 0, num = 3 }   # 10**linspace(−1, 0, 3)
    init_scale = { start = 0.05, stop = 0.2, num = 4 }  # linspace(0.05, 0.2, 4)

The trials are the Cartesian product of the axes (in file order) × seeds (innermost).
Trial id = ``<field>-<value>_…_seed-<s>``, so adding values to an axis keeps the ids (and
the finished results) of the old trials. The whole spec is checked when it is read,
before any trial runs (:class:`ConfigError` naming the key): only known keys and fields,
every value of the type its config field declares (``lr`` a finite number, ``batchnorm``
true or false, …), no dates, nesting at most :data:`~coarsegrad.validate.MAX_DEPTH`
deep, at most :data:`MAX_TRIALS` trials. A well-typed value a config rejects for its
range (``lr = -1``) becomes a failed trial, not a failed sweep. Every trial's config names
its ``rounding`` (the default, ``nearest``, unless the spec sets one), because a result
recorded without it was ``ceil``: re-running a spec from before the default changed into
its old folder is a ``ConfigError`` unless the spec says ``rounding = "ceil"``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coarsegrad import validate as v
from coarsegrad.config import DataConfig, ModelConfig, load_preset, read_toml
from coarsegrad.errors import ConfigError
from coarsegrad.training.loop import TrainConfig

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
FIELDS = {f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
HINTS = {name: typing.get_type_hints(SECTIONS[section])[name] for name, section in FIELDS.items()}
TOP_LEVEL = {"base", "seeds", "checkpoint_every", "description", "axes", *SECTIONS}
MAX_TRIALS = 100_000  # per spec (axis values × seeds)
Value = int | float | str | bool


@dataclass(frozen=True)
class Axis:
    """One swept field: ``section`` (data|model|train), ``field`` and its ``values``."""

    section: str
    field: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Trial:
    """One run: its id, the axis values (``params``), the seed and the full input config."""

    id: str
    params: dict[str, Value]
    seed: int
    config: dict[str, dict[str, Any]]


@dataclass
class SweepSpec:
    """A parsed spec: ``base`` config tables, ``axes``, ``seeds`` and ``checkpoint_every``."""

    base: dict[str, dict[str, Any]]
    axes: list[Axis]
    seeds: list[int]
    checkpoint_every: int = 0
    source: str = "<inline>"

    def trials(self) -> list[Trial]:
        """Every (axis values × seed) combination, seeds innermost; ids checked unique."""
        trials: list[Trial] = []
        seen: dict[str, dict[str, Value]] = {}
        for combo in itertools.product(*(axis.values for axis in self.axes)):
            config = {section: dict(values) for section, values in self.base.items()}
            for axis, value in zip(self.axes, combo, strict=False):
                if axis.field in ("steps", "epochs"):  # a swept budget replaces the base's
                    config["train"].pop("epochs" if axis.field == "steps" else "steps", None)
                config[axis.section][axis.field] = value
            params = {axis.field: value for axis, value in zip(self.axes, combo, strict=False)}
            for seed in self.seeds:
                trial_id = "_".join([*(f"{k}-{_slug(v)}" for k, v in params.items()), f"seed-{seed}"])
                if trial_id in seen:
                    raise ConfigError("axes", f"values {seen[trial_id]} and {params} give the same trial id "
                                      f"{trial_id!r}; make them differ in the first 6 digits")
                seen[trial_id] = params
                tables = {section: dict(values) for section, values in config.items()}
                tables["train"]["seed"] = seed
                trials.append(Trial(trial_id, dict(params), seed, tables))
        return trials

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, as saved to ``sweep.json``."""
        return {"source": self.source, "base": self.base, "seeds": self.seeds,
                "checkpoint_every": self.checkpoint_every,
                "axes": [{"section": a.section, "field": a.field, "values": list(a.values)} for a in self.axes]}


def _slug(value: Value) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def _clean_float(value: float) -> float:
    return float(f"{value:.12g}")  # 10**-0.5 → 0.316227766017, not 0.31622776601683794


def _axis_values(name: str, field: str, spec: object) -> tuple[Value, ...]:
    """A list as is, or a range table: {start, stop, num} or {log_start, log_stop, num};
    every value of the type ``field`` declares."""
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"axes.{name}", "needs at least one value")
        if len(spec) > MAX_TRIALS:
            raise ConfigError(f"axes.{name}", f"has {len(spec)} values, more than {MAX_TRIALS}")
        for value in spec:
            v.field_value(f"axes.{name}", value, HINTS[field])
        return tuple(spec)
    if not isinstance(spec, dict):
        raise ConfigError(f"axes.{name}", f"must be a list or a range table, got {spec!r}")
    keys = set(spec)
    if keys not in ({"start", "stop", "num"}, {"log_start", "log_stop", "num"}):
        raise ConfigError(f"axes.{name}", f"a range needs start/stop/num or log_start/log_stop/num, got {sorted(keys)}")
    num = v.integer(f"axes.{name}", spec["num"], lo=1, hi=MAX_TRIALS)
    lo, hi = (spec["start"], spec["stop"]) if "start" in spec else (spec["log_start"], spec["log_stop"])
    bound = math.inf if "start" in spec else 300.0  # 10**300 is still a float
    for end in (lo, hi):
        v.number(f"axes.{name}", end, lo=-bound, hi=bound)
    points = np.linspace(lo, hi, num) if "start" in spec else 10.0 ** np.linspace(lo, hi, num)
    values = tuple(_clean_float(float(x)) for x in points)
    for value in values:
        v.field_value(f"axes.{name}", value, HINTS[field])
    return values


def _axis(name: object, spec: object) -> Axis:
    if not isinstance(name, str):
        raise ConfigError("axes", f"axis names must be strings, got {name!r}")
    section, _, field = name.rpartition(".")
    if field not in FIELDS or (section and section != FIELDS[field]):
        raise ConfigError(f"axes.{name}", f"is not a config field; valid: {', '.join(sorted(FIELDS))}")
    if field == "seed":
        raise ConfigError("axes.seed", "use the top-level 'seeds' key")
    return Axis(FIELDS[field], field, _axis_values(name, field, spec))


def _seeds(value: object) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return list(range(v.integer("seeds", value, lo=1, hi=MAX_TRIALS)))
    if isinstance(value, list) and value and len(value) <= MAX_TRIALS:
        seeds = [v.integer("seeds", s, lo=0, hi=v.MAX_SEED) for s in value]
        if len(set(seeds)) == len(seeds):
            return seeds
    raise ConfigError("seeds", f"must be an integer n in 1..{MAX_TRIALS} or a list of distinct integers "
                               f"in 0..{v.MAX_SEED}, got {value!r}")


def parse_spec(spec: dict[str, Any], source: str = "<inline>", root: Path | None = None) -> SweepSpec:
    """Build a :class:`SweepSpec` from a TOML-like dict (``root``: folder for a relative ``base``)."""
    v.plain("spec", v.table("spec", spec))
    unknown = set(spec) - TOP_LEVEL
    if unknown:
        raise ConfigError("spec", f"{source}: unknown key(s) {sorted(unknown)}; valid: {', '.join(sorted(TOP_LEVEL))}")
    base: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    if "base" in spec:
        name = spec["base"]
        if not isinstance(name, str):
            raise ConfigError("base", f"must be a preset name or a TOML file, got {name!r}")
        local = (root or Path.cwd()) / name
        try:
            is_file = local.is_file()
        except (OSError, ValueError):
            is_file = False
        base = load_preset(str(local) if is_file else name)
        v.fields("train", base["train"], TrainConfig)
    if "description" in spec:
        v.string("description", spec["description"])
    for section, cls in SECTIONS.items():
        table = v.fields(section, spec.get(section, {}), cls)
        if section == "train" and {"steps", "epochs"} & set(table):  # an inline budget replaces the base's
            base[section].pop("steps", None)
            base[section].pop("epochs", None)
        base[section].update(table)
    axes_table = spec.get("axes", {})
    if not isinstance(axes_table, dict):
        raise ConfigError("axes", f"must be a table of field = values, got {axes_table!r}")
    axes = [_axis(name, values) for name, values in axes_table.items()]
    if len({a.field for a in axes}) != len(axes):
        raise ConfigError("axes", "an axis is given twice")
    base["model"].setdefault("rounding", ModelConfig.rounding)  # always recorded: results without it are ceil
    checkpoint_every = v.integer("checkpoint_every", spec.get("checkpoint_every", 0), lo=0, hi=v.MAX_STEPS)
    seeds = _seeds(spec.get("seeds", 1))
    count = len(seeds) * math.prod(len(axis.values) for axis in axes)
    if count > MAX_TRIALS:
        raise ConfigError("axes", f"the spec has {count} trials (axis values × seeds), more than {MAX_TRIALS}")
    return SweepSpec(base, axes, seeds, checkpoint_every, source)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and parse a spec file (:class:`ConfigError` naming the problem if it is bad)."""
    path = Path(path)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):
        is_file = False
    if not is_file:
        raise ConfigError("spec", f"no such file: {str(path)[:200]}")
    return parse_spec(read_toml(path, "spec"), str(path), path.parent)
