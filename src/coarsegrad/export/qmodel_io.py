"""Save and load a :class:`~coarsegrad.export.qmodel.QuantizedModel` packed at its bit widths.

One digest-checked safetensors file (:mod:`coarsegrad.io.tensorfile`; atomic write). Per
layer i:

* ``layer{i}.codes`` uint8: the weight codes q (C order) stored as u = (q + 1)/2 (binary,
  q = ±1) or u = q + M (ternary M = 1, uniform M = 2^{b−1} − 1), u ∈ 0..2^b − 1, packed
  by :func:`~coarsegrad.export.packing.pack_codes` at the width w ≥ b (1, 2, 4 or 8 bits);
* hidden layers: ``layer{i}.thresholds`` int32 [out, L];
* the last layer: ``layer{i}.scale`` and ``layer{i}.bias`` float32 [out].

Metadata key ``coarsegrad.qmodel`` holds JSON {format, version, architecture, input_shape,
mean, std, layers: [{shape, weight_kind, weight_bits, pool}], header}. Loading checks the
metadata and every tensor's dtype and shape against it before any code is unpacked (so
nothing larger than 8× the file's code bytes is allocated), then rebuilds the model
through :class:`QuantizedModel`'s validation. Any defect is a :class:`DataError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coarsegrad.errors import DataError, InputError
from coarsegrad.export.packing import pack_codes, packed_size, unpack_codes
from coarsegrad.export.qmodel import QLayer, QuantizedModel
from coarsegrad.io import tensorfile
from coarsegrad.quant.weight_spec import FIXED_BITS, KINDS, UNIFORM_BITS

QMODEL_KEY = "coarsegrad.qmodel"
VERSION = 1
MAX_CODES = 1 << 28


def code_offset(kind: str, bits: int) -> int:
    """M with u = q + M the stored code (binary: u = (q + 1)/2, returned as −1 to mark it)."""
    if kind == "binary":
        return -1
    return 1 if kind == "ternary" else (1 << (bits - 1)) - 1


def _stored(layer: QLayer) -> np.ndarray:
    q = layer.q.astype(np.int16)
    offset = code_offset(layer.weight_kind, layer.weight_bits)
    return (q + 1) // 2 if offset < 0 else q + offset


def packed_tensors(model: QuantizedModel) -> dict[str, np.ndarray]:
    """The tensors of the file (module docstring), codes packed at their bit width."""
    out: dict[str, np.ndarray] = {}
    for i, layer in enumerate(model.layers):
        out[f"layer{i}.codes"] = pack_codes(_stored(layer), layer.weight_bits)
        if layer.thresholds is not None:
            out[f"layer{i}.thresholds"] = layer.thresholds.astype(np.int32)
        else:
            assert layer.scale is not None and layer.bias is not None  # the last layer has them
            out[f"layer{i}.scale"], out[f"layer{i}.bias"] = layer.scale, layer.bias
    return out


def packed_bytes(model: QuantizedModel) -> int:
    """The bytes of :func:`packed_tensors` (codes, thresholds, last-layer scale and bias)."""
    return sum(int(t.nbytes) for t in packed_tensors(model).values())


def save_quantized(path: str | Path, model: QuantizedModel, header: Mapping[str, Any] | None = None) -> Path:
    """Atomically write ``model`` to ``path``; ``header``: JSON-able provenance (the checkpoint header)."""
    meta = {"format": QMODEL_KEY, "version": VERSION, "architecture": model.architecture,
            "input_shape": list(model.input_shape), "mean": model.mean, "std": model.std,
            "layers": [{"shape": list(layer.q.shape), "weight_kind": layer.weight_kind,
                        "weight_bits": layer.weight_bits, "pool": layer.pool} for layer in model.layers],
            "header": {k: v for k, v in (header or {}).items() if k != "tensors"}}
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in packed_tensors(model).items()}
    path = Path(path)
    tensorfile.save(path, tensors, {QMODEL_KEY: json.dumps(meta, sort_keys=True)})
    return path


def is_quantized_file(metadata: Mapping[str, str]) -> bool:
    """True if safetensors ``metadata`` is that of :func:`save_quantized`."""
    return QMODEL_KEY in metadata


def _int(value: object, lo: int, hi: int) -> bool:
    return type(value) is int and lo <= value <= hi


def _layer_meta(source: str, i: int, entry: object, last: bool) -> tuple[tuple[int, ...], str, int, int]:
    if not isinstance(entry, dict) or set(entry) != {"shape", "weight_kind", "weight_bits", "pool"}:
        raise DataError(source, f"layer {i}: metadata must be an object with shape, weight_kind, weight_bits, pool")
    shape, kind, bits, pool = entry["shape"], entry["weight_kind"], entry["weight_bits"], entry["pool"]
    if not (isinstance(shape, list) and len(shape) in (2, 4) and all(_int(s, 1, MAX_CODES) for s in shape)
            and math.prod(shape) <= MAX_CODES):
        raise DataError(source, f"layer {i}: shape must be 2 or 4 positive ints, at most {MAX_CODES} codes")
    if kind not in KINDS or not _int(bits, 1, UNIFORM_BITS[1]):
        raise DataError(source, f"layer {i}: weight_kind must be one of {KINDS} with its bits")
    if (kind in FIXED_BITS and bits != FIXED_BITS[kind]) or (kind == "uniform" and bits < UNIFORM_BITS[0]):
        raise DataError(source, f"layer {i}: {kind} weights cannot have {bits} bits")
    if not _int(pool, 0, 1 << 16) or (last and pool):
        raise DataError(source, f"layer {i}: pool must be a small non-negative int (0 for the last layer)")
    return tuple(shape), kind, bits, pool


def _tensor(source: str, tensors: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype,
            shape: tuple[int, ...]) -> np.ndarray:
    t = tensors[name]
    if t.dtype != dtype or tuple(t.shape) != shape:
        raise DataError(source, f"tensor {name!r} must be {dtype} {list(shape)}, got {t.dtype} {list(t.shape)}")
    return t.numpy()


def load_quantized(path: str | Path) -> tuple[QuantizedModel, dict[str, Any]]:
    """(model, metadata) from a file of :func:`save_quantized`; :class:`DataError` if anything is off."""
    source = str(path)
    tensors, metadata = tensorfile.load(path)
    if not is_quantized_file(metadata):
        raise DataError(source, f"not a quantized-model file (no {QMODEL_KEY!r} metadata)")
    try:
        meta = json.loads(metadata[QMODEL_KEY])
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(source, f"quantized-model metadata is not JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != QMODEL_KEY or meta.get("version") != VERSION:
        raise DataError(source, f"unsupported quantized-model format (need {QMODEL_KEY} version {VERSION})")
    layers_meta, shape, header = meta.get("layers"), meta.get("input_shape"), meta.get("header", {})
    mean, std, arch = meta.get("mean"), meta.get("std"), meta.get("architecture", "")
    if not (isinstance(layers_meta, list) and 1 <= len(layers_meta) <= 64):
        raise DataError(source, "quantized-model metadata: 'layers' must be a list of 1..64 layers")
    if not (isinstance(shape, list) and len(shape) in (1, 3) and all(_int(s, 1, MAX_CODES) for s in shape)):
        raise DataError(source, "quantized-model metadata: 'input_shape' must be 1 or 3 positive ints")
    if not all(type(v) in (int, float) for v in (mean, std)) or not isinstance(arch, str) or not isinstance(header, dict):
        raise DataError(source, "quantized-model metadata: mean, std must be numbers, architecture a string, header an object")
    parsed = [_layer_meta(source, i, e, i == len(layers_meta) - 1) for i, e in enumerate(layers_meta)]
    expected = set()
    for i, _ in enumerate(parsed):
        expected |= {f"layer{i}.codes"} | ({f"layer{i}.scale", f"layer{i}.bias"} if i == len(parsed) - 1
                                           else {f"layer{i}.thresholds"})
    if set(tensors) != expected:
        raise DataError(source, f"tensors {sorted(tensors)} are not {sorted(expected)}")
    layers = []
    try:
        for i, (q_shape, kind, bits, pool) in enumerate(parsed):
            count = math.prod(q_shape)
            packed = _tensor(source, tensors, f"layer{i}.codes", torch.uint8, (packed_size(count, bits),))
            u = unpack_codes(packed, bits, count).astype(np.int16).reshape(q_shape)
            offset = code_offset(kind, bits)
            q = 2 * u - 1 if offset < 0 else u - offset
            if np.abs(q).max() > (1 if offset < 0 else offset):
                raise DataError(source, f"layer {i}: a stored code lies outside the {kind} range")
            if i == len(parsed) - 1:
                layers.append(QLayer(q.astype(np.int8), kind, bits,
                                     scale=_tensor(source, tensors, f"layer{i}.scale", torch.float32, (q_shape[0],)),
                                     bias=_tensor(source, tensors, f"layer{i}.bias", torch.float32, (q_shape[0],))))
            else:
                t = tensors[f"layer{i}.thresholds"]
                if t.dtype != torch.int32 or t.dim() != 2 or t.shape[0] != q_shape[0]:
                    raise DataError(source, f"tensor 'layer{i}.thresholds' must be int32 [{q_shape[0]}, L]")
                layers.append(QLayer(q.astype(np.int8), kind, bits, thresholds=t.numpy().astype(np.int64), pool=pool))
        model = QuantizedModel(tuple(layers), tuple(shape), float(mean), float(std), arch)  # type: ignore[arg-type]
    except DataError as exc:
        if exc.field == source:
            raise
        raise DataError(source, f"quantized model is invalid ({exc})") from None
    except InputError as exc:
        raise DataError(source, f"quantized model is invalid ({exc})") from None
    return model, meta
