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
from typing import Any, Literal

from coarsegrad.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib
from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.staircase import ROUNDING_OFFSET, check_alpha, check_bits, check_rounding
from coarsegrad.quant.ste import BUILTIN_STES, get_ste

DATASETS = ("synthetic", "mnist", "fashion-mnist", "kmnist")
MODELS = ("two_layer", "mlp", "lenet5")
ACTS = ("quant", "float")
CHOICES = {"data": DATASETS, "model": MODELS, "ste": tuple(BUILTIN_STES), "rounding": tuple(ROUNDING_OFFSET)}


@dataclass
class DataConfig:
    """Which data. ``synthetic`` is the orthogonal-subspace problem with these sizes
    (``data_seed`` None means the training seed); the image datasets are read from
    ``data_dir`` or the usual places (see ``coarsegrad data list``)."""

    data: str = "synthetic"
    data_dir: str | None = None
    num_classes: int = 4
    dim: int = 40
    subspace_dim: int = 5
    samples_per_class: int = 100
    data_seed: int | None = None

    def __post_init__(self) -> None:
        if self.data not in DATASETS:
            raise ConfigError("data", f"unknown dataset {self.data!r}; valid: {', '.join(DATASETS)}")
        for name in ("num_classes", "dim", "subspace_dim", "samples_per_class"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        if self.num_classes * self.subspace_dim > self.dim:
            raise ConfigError("dim", f"must be >= num_classes·subspace_dim = "
                              f"{self.num_classes * self.subspace_dim}, got {self.dim}")


@dataclass
class ModelConfig:
    """Which network. The activation is ``act_quant()``: bits, alpha, ste and rounding
    (``alpha`` None resolves as :class:`~coarsegrad.quant.spec.ActQuant` does for this
    rounding: for ceil, ``optimal_alpha(bits)``). ``act="float"``: the float baseline,
    plain ReLU in place of every quantized activation (bits, alpha, ste, rounding unused)."""

    model: str = "two_layer"
    units_per_class: int = 20
    second_layer: Literal["fixed", "trained"] = "fixed"
    init_scale: float = 0.1
    hidden: int = 128
    batchnorm: bool = False
    bits: int = 2
    alpha: float | None = None
    ste: str = "clipped_relu"
    rounding: str = "ceil"
    act: Literal["quant", "float"] = "quant"

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError("model", f"unknown model {self.model!r}; valid: {', '.join(MODELS)}")
        if self.act not in ACTS:
            raise ConfigError("act", f"must be one of {', '.join(ACTS)}, got {self.act!r}")
        check_bits(self.bits)
        if self.alpha is not None:
            self.alpha = check_alpha(self.alpha)
        get_ste(self.ste)
        check_rounding(self.rounding)
        if self.second_layer not in ("fixed", "trained"):
            raise ConfigError("second_layer", f"must be 'fixed' or 'trained', got {self.second_layer!r}")
        for name in ("units_per_class", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")

    def act_quant(self) -> ActQuant:
        """The activation spec of these fields (α resolved for ``alpha=None``)."""
        return ActQuant(self.bits, self.alpha, self.ste, self.rounding)  # type: ignore[arg-type]


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
            group.add_argument(flag, dest=f.name, type=kind, default=None, metavar="|".join(CHOICES[f.name]),
                               help=f"one of {', '.join(CHOICES[f.name])} (default: {default})")
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=None, help=f"(default: {default})")


def dataclass_from_flags(cls: type, namespace: argparse.Namespace, base: dict | None = None) -> Any:
    """Build ``cls`` from the flags that were given, on top of ``base`` (e.g. a preset)."""
    values = dict(base or {})
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


def load_preset(path: str) -> dict[str, dict]:
    """Read a TOML preset with optional ``[data]``, ``[model]`` and ``[train]`` tables.

    ``path`` is a file, or the name of a preset shipped in ``coarsegrad/presets``
    (also reachable as ``configs/`` in the repository), e.g. ``"synthetic"``.
    """
    file = Path(path)
    if not file.is_file() and (PRESETS_DIR / f"{path}.toml").is_file():
        file = PRESETS_DIR / f"{path}.toml"
    if not file.is_file():
        names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
        raise ConfigError("config", f"no such preset file: {path} (shipped presets: {names})")
    try:
        preset = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"{path} is not valid TOML ({exc})") from None
    unknown = set(preset) - {"data", "model", "train"}
    if unknown:
        raise ConfigError("config", f"{path}: unknown section(s) {sorted(unknown)}; valid: data, model, train")
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
