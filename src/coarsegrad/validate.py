"""The one set of value checks: small typed functions that return the value or raise
:class:`~coarsegrad.errors.ConfigError` naming the field.

Rules: an integer is an ``int`` that is not a ``bool`` (TOML ``true`` is not 1); a number
is an ``int`` or ``float`` that is not a ``bool``, finite unless ``finite=False``; a
boolean is a real ``bool`` (not 0/1, not ``"yes"``). Bounds are inclusive unless
``lo_open``/``hi_open``. Every size a config can request has a stated upper bound
(below), so that no config can ask for more than a few GB.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

import torch

from coarsegrad.errors import ConfigError, DataError

T = TypeVar("T")

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
MAX_DIM = 2**13  # synthetic input dimension: its Haar rotation is dim² float64 = 512 MiB at most
MAX_SAMPLES = 2**20  # samples per class of the synthetic data
MAX_CLASSES = 2**10
MAX_ELEMENTS = 2**28  # synthetic X (classes·samples_per_class·dim) and model parameters: 1 GiB of float32
MAX_UNITS = 2**14  # hidden units, units per class
MAX_STEPS = 10**9
MAX_BATCH = 2**24
MAX_DEPTH = 8  # nesting of tables/arrays in a TOML preset or sweep spec
MAX_WORKERS = 4096  # processes of a pool


def integer(name: str, value: object, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer{_range(lo, hi)}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(name, f"must be an integer{_range(lo, hi)}, got {value}")
    return value


def optional_integer(name: str, value: object, *, lo: int | None = None, hi: int | None = None) -> int | None:
    """None, or :func:`integer`."""
    return None if value is None else integer(name, value, lo=lo, hi=hi)


def number(name: str, value: object, *, lo: float | None = None, hi: float | None = None,
           finite: bool = True, lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float if it is an int or float (not a bool), finite (unless
    ``finite=False``) and within the bounds (open where ``lo_open``/``hi_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be a number{_range(lo, hi, lo_open, hi_open)}, got {value!r}")
    try:
        x = float(value)
    except OverflowError:  # an int beyond float range
        raise ConfigError(name, f"must be a finite number{_range(lo, hi, lo_open, hi_open)}, got {value!r}") from None
    if math.isnan(x) or (finite and math.isinf(x)):
        raise ConfigError(name, f"must be a finite number{_range(lo, hi, lo_open, hi_open)}, got {value!r}")
    too_low = lo is not None and (x <= lo if lo_open else x < lo)
    too_high = hi is not None and (x >= hi if hi_open else x > hi)
    if too_low or too_high:
        raise ConfigError(name, f"must be a number{_range(lo, hi, lo_open, hi_open)}, got {value!r}")
    return x


def boolean(name: str, value: object) -> bool:
    """``value`` if it is a real bool (true/false), not 0/1 or a string."""
    if not isinstance(value, bool):
        raise ConfigError(name, f"must be true or false, got {value!r}")
    return value


def string(name: str, value: object) -> str:
    """``value`` if it is a str."""
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a string, got {value!r}")
    return value


def choice(name: str, value: object, options: Iterable[T]) -> T:
    """``value`` if it is one of ``options`` (compared with ==, types must match)."""
    options = tuple(options)
    for option in options:
        if type(value) is type(option) and value == option:
            return option
    valid = ", ".join(str(o) for o in options)
    raise ConfigError(name, f"unknown value {value!r}; valid: {valid}")


def plain(name: str, value: object, depth: int = 0) -> object:
    """``value`` if it is plain TOML data (str, int, float, bool, lists and tables of
    them) nested at most :data:`MAX_DEPTH` deep; dates and times are refused."""
    if depth > MAX_DEPTH:
        raise ConfigError(name, f"is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            plain(f"{name}.{key}", item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            plain(name, item, depth + 1)
    elif not isinstance(value, (str, int, float, bool)):
        raise ConfigError(name, f"must be a number, string or boolean, got {type(value).__name__} {value!r}")
    return value


def table(name: str, value: object) -> dict[str, Any]:
    """``value`` if it is a table (a dict with string keys); ``[[name]]`` arrays are refused."""
    if not isinstance(value, dict):
        what = "an array of tables ([[...]])" if isinstance(value, list) else repr(value)
        raise ConfigError(name, f"must be a table ([{name}]), got {what}")
    return value


def field_value(name: str, value: object, kind: object) -> object:
    """``value`` checked against the type hint ``kind`` of a config field: int, float,
    bool, str, a ``Literal`` of strings, ``X | None`` (None allowed), or a tuple."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return field_value(name, value, inner[0]) if len(inner) == 1 else value
    if kind is bool:
        return boolean(name, value)
    if kind is int:
        return integer(name, value)
    if kind is float:
        return number(name, value)
    if kind is str:
        return string(name, value)
    if origin is Literal:
        return choice(name, value, args)
    return plain(name, value)


def fields(section: str, values: object, cls: type) -> dict[str, Any]:
    """The table ``values`` if its keys are fields of dataclass ``cls`` and each value has
    the field's declared type (:func:`field_value`); names are ``section.field``."""
    values = table(section, values)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{section}.{key}", f"is not a field of {cls.__name__}; valid: {', '.join(sorted(names))}")
        field_value(f"{section}.{key}", value, hints[key])
    return values


def _range(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def check_data(X: torch.Tensor, y: torch.Tensor) -> None:
    """Raise :class:`DataError` naming ``X`` or ``y`` unless they form a usable training set."""
    if not isinstance(X, torch.Tensor) or not X.is_floating_point():
        raise DataError("X", "must be a floating-point tensor")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
        raise DataError("y", "must be a 1-D int64 tensor of class indices")
    if X.dim() < 2 or X.shape[0] == 0:
        raise DataError("X", f"must have shape [N, ...] with N >= 1, got {tuple(X.shape)}")
    if X.shape[0] != y.shape[0]:
        raise DataError("y", f"has {y.shape[0]} labels for {X.shape[0]} rows of X")
    # a finite sum proves every entry finite (NaN and ±inf survive any summation order)
    # in one read of X; only an overflowing sum needs the elementwise test
    if not torch.isfinite(X.sum()) and not torch.isfinite(X).all():
        raise DataError("X", "contains NaN or infinite values")
    if int(y.min()) < 0:
        raise DataError("y", f"labels must be >= 0, got {int(y.min())}")
