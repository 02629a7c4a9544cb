"""Typed run configuration, validated at construction, and CLI flags generated from it.

A run is (data, model, train): :class:`DataConfig`, :class:`ModelConfig` and
:class:`~coarsegrad.training.loop.TrainConfig`. Each field becomes a ``--flag`` of the same
name (underscores as dashes) with the field's type; the resolved config is saved
with every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from coarsegrad import validate as v
from coarsegrad.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib
from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.staircase import (
    DEFAULT_ROUNDING,
    LEGACY_ROUNDING,
    ROUNDING_OFFSET,
    check_alpha_range,
    check_bits,
    check_rounding,
)
from coarsegrad.quant.ste import BUILTIN_STES, get_ste
from coarsegrad.quant.weight_spec import WeightQuant

DATASETS = ("synthetic", "mnist", "fashion-mnist", "kmnist")
MODELS = ("two_layer", "mlp", "lenet5")
ACTS = ("quant", "float")
SYNTHETIC_KINDS = ("pairs", "iid", "sphere", "clusters", "orthant")
"""Data models of :func:`coarsegrad.data.synthetic.synthetic_data`."""
CHOICES = {"data": DATASETS, "model": MODELS, "ste": tuple(BUILTIN_STES), "rounding": tuple(ROUNDING_OFFSET)}
NOTES = {"rounding": "nearest: first threshold α/2, the paper's claim holds at every bit width; "
                     "ceil: the authors' code, first threshold 0, fails at 1 bit"}
"""A few words after a flag's choices, where its default needs a reason."""


@dataclass
class DataConfig:
    """Which data. ``synthetic`` is the orthogonal-subspace problem with these sizes
    (``data_seed`` None means the training seed) and data model ``synthetic_kind``
    (``bias`` appends a constant input 1; ``clusters`` per class for ``clusters``; see
    :mod:`coarsegrad.data.synthetic`); the image datasets are read from
    ``data_dir`` or the usual places (see ``coarsegrad data list``)."""

    data: str = "synthetic"
    data_dir: str | None = None
    num_classes: int = 4
    dim: int = 40
    subspace_dim: int = 5
    samples_per_class: int = 100
    data_seed: int | None = None
    synthetic_kind: Literal["pairs", "iid", "sphere", "clusters", "orthant"] = "pairs"
    bias: bool = False
    clusters: int = 4

    def __post_init__(self) -> None:
        v.choice("data", self.data, DATASETS)
        if self.data_dir is not None:
            v.string("data_dir", self.data_dir)
        v.optional_integer("data_seed", self.data_seed, lo=0, hi=v.MAX_SEED)
        for name, hi in (("num_classes", v.MAX_CLASSES), ("dim", v.MAX_DIM), ("subspace_dim", v.MAX_DIM),
                         ("samples_per_class", v.MAX_SAMPLES)):
            v.integer(name, getattr(self, name), lo=1, hi=hi)
        if self.num_classes * self.subspace_dim > self.dim:
            raise ConfigError("dim", f"must be >= num_classes·subspace_dim = "
                              f"{self.num_classes * self.subspace_dim}, got {self.dim}")
        if self.num_classes * self.samples_per_class * self.dim > v.MAX_ELEMENTS:
            raise ConfigError("samples_per_class", f"num_classes·samples_per_class·dim must be <= {v.MAX_ELEMENTS} "
                              f"(1 GiB of float32), got {self.num_classes * self.samples_per_class * self.dim}")
        self._check_synthetic()

    def _check_synthetic(self) -> None:
        """The synthetic data model: ``synthetic_kind``, ``bias``, ``clusters`` (even, ± pairs)."""
        v.choice("synthetic_kind", self.synthetic_kind, SYNTHETIC_KINDS)
        v.boolean("bias", self.bias)
        if v.integer("clusters", self.clusters, lo=2, hi=v.MAX_SAMPLES) % 2:
            raise ConfigError("clusters", f"must be even (± pairs of centres), got {self.clusters}")


@dataclass
class ModelConfig:
    """Which network. The activation is ``act_quant()``: bits, alpha, ste and rounding
    (``alpha`` None resolves as :class:`~coarsegrad.quant.spec.ActQuant` does for this
    rounding: ``optimal_alpha(bits)``, the published α, for nearest and ceil). The default
    rounding is ``nearest`` (``ceil``, the authors' code, fails at 1 bit; see
    docs/synthetic.md); a saved model table without ``rounding`` is ceil
    (:func:`saved_model_fields`). ``act="float"``: the float baseline, plain ReLU in place
    of every quantized activation (bits, alpha, ste, rounding unused).
    ``act_step``: the paper's fixed α (``"fixed"``), or a step learned from α: ``"lsq"``
    (LSQ) or ``"pact"`` (PACT's clipping level), which need ``rounding="nearest"``.
    The weights are ``weight_quant()``: float for ``weight_kind="float"`` (the default;
    the other ``weight_*`` fields unused; with ``weight_bits`` set the kind becomes binary
    for 1 bit and uniform for 2..8 bits, ternary only when named), else every Linear and Conv2d layer quantized
    with that kind, bits, granularity and method (``weight_hard_after``: a whole number is
    a step, a number in (0, 1) a fraction of the run; ``weight_step="lsq"``: a learned
    LSQ step per layer or channel, uniform kind and method ste only)."""

    model: str = "two_layer"
    units_per_class: int = 20
    second_layer: Literal["fixed", "trained"] = "fixed"
    init_scale: float = 0.1
    hidden: int = 128
    batchnorm: bool = False
    bits: int = 2
    alpha: float | None = None
    ste: str = "clipped_relu"
    rounding: str = DEFAULT_ROUNDING
    act: Literal["quant", "float"] = "quant"
    act_step: Literal["fixed", "lsq", "pact"] = "fixed"
    weight_kind: Literal["float", "binary", "ternary", "uniform"] = "float"
    weight_bits: int | None = None
    weight_granularity: Literal["layer", "channel"] = "layer"
    weight_method: Literal["ste", "bcgd", "binaryrelax"] = "ste"
    weight_step: Literal["stat", "lsq"] = "stat"
    weight_clip: float | None = 1.0
    weight_rho: float = 1e-5
    weight_lam0: float = 1.0
    weight_lam_growth: float = 1.001
    weight_hard_after: float | None = None

    def __post_init__(self) -> None:
        v.choice("model", self.model, MODELS)
        v.choice("act", self.act, ACTS)
        if v.choice("act_step", self.act_step, ("fixed", "lsq", "pact")) != "fixed" and self.rounding != "nearest":
            raise ConfigError("act_step", f"{self.act_step} rounds to nearest: needs rounding='nearest', "
                                          f"got {self.rounding!r}")
        check_bits(self.bits)
        if self.alpha is not None:
            self.alpha = check_alpha_range(self.bits, self.alpha)
        get_ste(v.string("ste", self.ste))
        check_rounding(self.rounding)
        v.choice("second_layer", self.second_layer, ("fixed", "trained"))
        v.number("init_scale", self.init_scale, lo=0, lo_open=True)
        v.boolean("batchnorm", self.batchnorm)
        for name in ("units_per_class", "hidden"):
            v.integer(name, getattr(self, name), lo=1, hi=v.MAX_UNITS)
        if self.weight_kind == "float" and self.weight_bits is not None:
            # weight bits alone pick the kind: 1 → binary, 2..8 → uniform (ternary only by name)
            self.weight_kind = "binary" if self.weight_bits == 1 else "uniform"
        self.weight_quant()  # validates the weight_* fields

    def weight_quant(self) -> WeightQuant | None:
        """The weight spec of the ``weight_*`` fields, or None for float weights
        (``ConfigError`` naming the ``weight_*`` field at fault)."""
        kind = v.choice("weight_kind", self.weight_kind, ("float", "binary", "ternary", "uniform"))
        if kind == "float":
            if self.weight_bits is not None:
                raise ConfigError("weight_bits", "needs weight_kind binary, ternary or uniform (float weights "
                                                 "have no bits)")
            if v.choice("weight_step", self.weight_step, ("stat", "lsq")) != "stat":
                raise ConfigError("weight_step", "needs weight_kind uniform (float weights have no step)")
            return None
        hard: Any = self.weight_hard_after
        if isinstance(hard, float) and hard.is_integer():
            hard = int(hard)
        try:
            return WeightQuant(kind=kind, bits=self.weight_bits,  # type: ignore[arg-type]
                               granularity=self.weight_granularity, method=self.weight_method, step=self.weight_step,
                               clip=self.weight_clip, rho=self.weight_rho, lam0=self.weight_lam0,
                               lam_growth=self.weight_lam_growth, hard_after=hard)
        except ConfigError as exc:
            raise ConfigError(f"weight_{exc.field}", str(exc).split(": ", 1)[1]) from None

    def act_quant(self) -> ActQuant:
        """The activation spec of these fields (α resolved for ``alpha=None``)."""
        learn = None if self.act_step == "fixed" else self.act_step
        return ActQuant(self.bits, self.alpha, self.ste, self.rounding, learn=learn)  # type: ignore[arg-type]


def saved_model_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A :class:`ModelConfig` table (or a saved quant spec) read back from a file: run
    config, checkpoint header, sweep result, results row. One without ``rounding`` was
    written before the field existed, when every run was ``ceil``, so it reads as ceil,
    never as today's default; one with it is returned as is (a copy)."""
    return {"rounding": LEGACY_ROUNDING, **fields}


def _parse_optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else kind(text)
    parse.__name__ = kind.__name__
    return parse


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, title: str,
                        description: str | None = None) -> None:
    """Add one ``--field-name`` flag per field of dataclass ``cls`` (default: unset); a field
    with a fixed set of values (a ``Literal`` or a name in :data:`CHOICES`) lists them."""
    group = parser.add_argument_group(title, description or (cls.__doc__ or "").split("\n")[0])
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        args = typing.get_args(kind)
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=f"(default: {default})")
        elif typing.get_origin(kind) is Literal:
            group.add_argument(flag, dest=f.name, default=None, metavar="|".join(args),
                               help=f"(default: {default})")
        elif typing.get_origin(kind) in (typing.Union, types.UnionType):
            inner = next(a for a in args if a is not type(None))
            group.add_argument(flag, dest=f.name, type=_parse_optional(inner), default=None,
                               help=f"{inner.__name__} or none (default: {default})")
        elif f.name in CHOICES:
            note = f"; {NOTES[f.name]}" if f.name in NOTES else ""
            group.add_argument(flag, dest=f.name, type=kind, default=None, metavar="|".join(CHOICES[f.name]),
                               help=f"one of {', '.join(CHOICES[f.name])} (default: {default}{note})")
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=None, help=f"(default: {default})")


def dataclass_from_flags(cls: type, namespace: argparse.Namespace, base: dict | None = None) -> Any:
    """Build ``cls`` from the flags that were given, on top of ``base`` (e.g. a preset)."""
    section = {"DataConfig": "data", "ModelConfig": "model", "TrainConfig": "train"}.get(cls.__name__, cls.__name__)
    values = dict(v.fields(section, base or {}, cls))  # preset values: known fields, declared types
    names = {f.name for f in dataclasses.fields(cls)}
    for name in names:
        value = getattr(namespace, name, None)
        if value is not None:
            values[name] = value
    unknown = set(values) - names
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"is not a field of {cls.__name__}")
    return cls(**values)


PRESETS_DIR = Path(__file__).resolve().parent / "presets"


MAX_TOML_BYTES = 1 << 20


def read_toml(path: Path, field: str) -> dict[str, Any]:
    """Parse the TOML file ``path``; any problem (unreadable, too large, not UTF-8, bad
    syntax, nesting too deep, dates) is a ``ConfigError(field)`` naming the file."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TOML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(field, f"cannot read {path} ({exc.strerror or exc})") from None
    if len(raw) > MAX_TOML_BYTES:
        raise ConfigError(field, f"{path} is larger than {MAX_TOML_BYTES} bytes")
    try:
        parsed: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(field, f"{path} is not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(field, f"{path}: values nested too deeply") from None
    v.plain(field, parsed)
    return parsed


def load_preset(path: str) -> dict[str, dict]:
    """Read a TOML preset with optional ``[data]``, ``[model]`` and ``[train]`` tables.

    ``path`` is a file, or the name of a preset shipped in ``coarsegrad/presets``
    (also reachable as ``configs/`` in the repository), e.g. ``"synthetic"``. Checked
    here (:class:`ConfigError`): only those tables; ``[data]`` and ``[model]`` hold only
    fields of their dataclass, each of its declared type; ``[train]`` plain values (its
    fields are checked by ``TrainConfig``); no dates; nesting at most
    :data:`~coarsegrad.validate.MAX_DEPTH` deep.
    """
    file = Path(path)
    try:
        if not file.is_file() and (PRESETS_DIR / f"{path}.toml").is_file():
            file = PRESETS_DIR / f"{path}.toml"
        found = file.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        found = False
    if not found:
        names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
        raise ConfigError("config", f"no such preset file: {path} (shipped presets: {names})")
    preset = read_toml(file, "config")
    unknown = set(preset) - {"data", "model", "train"}
    if unknown:
        raise ConfigError("config", f"{path}: unknown section(s) {sorted(unknown)}; valid: data, model, train")
    v.fields("data", preset.get("data", {}), DataConfig)
    v.fields("model", preset.get("model", {}), ModelConfig)
    v.table("train", preset.get("train", {}))
    return {section: dict(preset.get(section, {})) for section in ("data", "model", "train")}


def overlay(lower: dict[str, dict], upper: dict[str, dict]) -> dict[str, dict]:
    """``upper``'s fields over ``lower``'s, section by section; a step budget (``steps`` or
    ``epochs``) in ``upper``'s train section replaces both of ``lower``'s."""
    merged = {section: dict(lower.get(section, {})) for section in ("data", "model", "train")}
    if {"steps", "epochs"} & set(upper.get("train", {})):
        merged["train"].pop("steps", None)
        merged["train"].pop("epochs", None)
    for section in merged:
        merged[section].update(upper.get(section, {}))
    return merged


def data_defaults(data: str) -> dict[str, dict]:
    """The values for the fields a user did not set, by dataset: the paper's setting
    (preset ``synthetic``) for the synthetic problem, mini-batch momentum SGD by epochs
    (preset ``images``) for image data."""
    if data not in DATASETS:
        raise ConfigError("data", f"unknown dataset {data!r}; valid: {', '.join(DATASETS)}")
    return load_preset("synthetic" if data == "synthetic" else "images")
