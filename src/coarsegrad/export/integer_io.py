"""Save and load an :class:`IntegerModel` as safetensors (no pickle).

Tensors ``w1`` (float32 or int8), ``b1``, ``w2``, ``b2`` and, for int8, ``w1_scale``;
metadata key ``coarsegrad.integer`` holds JSON {format, version, bits, alpha, weights,
input_lo, input_step, input_zero, source, rounding, header} (a file without ``rounding``
predates the field and loads as ``ceil``): ``header`` is the source checkpoint's header
(architecture, normalisation, run config, …) without its tensor list. Loading checks
every field and rebuilds the model through :class:`IntegerModel`'s own validation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coarsegrad.errors import DataError, InputError
from coarsegrad.export.integer import IntegerModel
from coarsegrad.io import tensorfile
from coarsegrad.quant.staircase import LEGACY_ROUNDING

INTEGER_KEY = "coarsegrad.integer"
VERSION = 1


def save_integer(path: str | Path, model: IntegerModel, header: Mapping[str, Any] | None = None) -> Path:
    """Atomically write ``model`` to ``path``; ``header``: JSON-able provenance to keep."""
    tensors = {"w1": model.w1, "b1": model.b1, "w2": model.w2, "b2": model.b2}
    if model.w1_scale is not None:  # int8 models only
        tensors["w1_scale"] = model.w1_scale
    meta = {"format": INTEGER_KEY, "version": VERSION, "bits": model.bits, "alpha": model.alpha,
            "weights": "int8" if model.int8 else "float32", "input_lo": model.input_lo,
            "input_step": model.input_step, "input_zero": model.input_zero, "source": model.source,
            "rounding": model.rounding,
            "header": {k: v for k, v in (header or {}).items() if k != "tensors"}}
    path = Path(path)
    tensorfile.save(path, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
                        {INTEGER_KEY: json.dumps(meta, sort_keys=True)})
    return path


def is_integer_file(metadata: Mapping[str, str]) -> bool:
    """True if safetensors ``metadata`` is that of :func:`save_integer`."""
    return INTEGER_KEY in metadata


def load_integer(path: str | Path) -> tuple[IntegerModel, dict[str, Any]]:
    """(model, metadata) from a file written by :func:`save_integer`; :class:`DataError` if bad."""
    source = str(path)
    tensors, metadata = tensorfile.load(path)
    if not is_integer_file(metadata):
        raise DataError(source, "not an integer-model file (no 'coarsegrad.integer' metadata)")
    try:
        meta = json.loads(metadata[INTEGER_KEY])
        ok = isinstance(meta, dict) and meta.get("format") == INTEGER_KEY and meta.get("version") == VERSION
        int8 = ok and meta.get("weights") == "int8"
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(source, f"integer-model metadata is not JSON ({type(exc).__name__})") from None
    if not ok:
        raise DataError(source, f"unsupported integer-model format (need {INTEGER_KEY} version {VERSION})")
    if meta.get("weights") not in ("int8", "float32") or not isinstance(meta.get("header", {}), (dict, type(None))):
        raise DataError(source, "integer-model metadata is malformed: 'weights' must be int8 or float32, 'header' an object")
    for key, kind in (("bits", int), ("alpha", float), ("input_lo", float), ("input_step", float), ("input_zero", int)):
        value = meta.get(key)
        if not (value is None and key.startswith("input")) and not (
                type(value) is kind or (kind is float and type(value) is int)):
            raise DataError(source, f"integer-model metadata is malformed: {key!r} must be {kind.__name__}, got {value!r}")
    names = {"w1", "b1", "w2", "b2"} | ({"w1_scale"} if int8 else set())
    if set(tensors) != names:
        raise DataError(source, f"tensors {sorted(tensors)} are not {sorted(names)}")
    try:
        arrays = {k: v.numpy() for k, v in tensors.items()}  # TypeError for bfloat16
        model = IntegerModel(
            bits=int(meta["bits"]), alpha=float(meta["alpha"]), w1=arrays["w1"], b1=arrays["b1"],
            w2=arrays["w2"], b2=arrays["b2"], w1_scale=arrays.get("w1_scale"),
            input_lo=None if meta.get("input_lo") is None else float(meta["input_lo"]),
            input_step=None if meta.get("input_step") is None else float(meta["input_step"]),
            input_zero=None if meta.get("input_zero") is None else int(meta["input_zero"]),
            source=str(meta.get("source", "")), rounding=str(meta.get("rounding", LEGACY_ROUNDING)))
    except InputError as exc:
        raise DataError(source, f"integer model is invalid ({exc})") from None
    except (LookupError, TypeError, ValueError, ArithmeticError) as exc:
        raise DataError(source, f"integer-model metadata is malformed ({exc!r})") from None
    return model, meta
