"""Checkpoint headers: the constants and the checks made BEFORE any model is built.

:func:`check_header` validates types, ranges and the shapes of the size-carrying
tensors present against the sizes the header states (two_layer, mlp, lenet5), so that
building the model afterwards allocates no more than the file holds plus O(sizes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from coarsegrad.config import ModelConfig
from coarsegrad.errors import ConfigError, DataError

HEADER_KEY = "coarsegrad.checkpoint"
FORMAT_VERSION = 1
# (architecture) -> (weight whose shape[1] is in_features, weight whose shape[0] is num_classes)
SIZE_TENSORS = {"mlp": ("fc1.weight", "fc2.weight"), "two_layer": ("W", "V"),
                "lenet5": ("features.0.weight", "classifier.3.weight")}
LENET_IN = 28 * 28
# LeNet-5: (tensor, dim) -> size; shapes [c1,1,5,5], [c2,c1,5,5], [h,16*c2], [K,h]
_LENET_SIZES = {"c1": ("features.0.weight", 0), "c2": ("features.4.weight", 0), "hidden": ("classifier.0.weight", 0)}


def dtype_name(t: torch.Tensor) -> str:
    """"float32", "int64", …"""
    return str(t.dtype).removeprefix("torch.")


def lenet_sizes(tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """{channels: [c₁, c₂], hidden: h} read from LeNet-5 weights (KeyError/IndexError if absent)."""
    got = {k: int(tensors[name].shape[dim]) for k, (name, dim) in _LENET_SIZES.items()}
    return {"channels": [got["c1"], got["c2"]], "hidden": got["hidden"]}


def check_normalization(value: object) -> dict[str, Any] | None:
    """{mean, std} of (mean, std) scalars or lists (finite, std > 0), or None; else ConfigError."""
    if value is None:
        return None
    pair: Any = (value["mean"], value["std"]) if isinstance(value, Mapping) else value
    mean, std = pair
    out = {}
    for name, v in (("mean", mean), ("std", std)):
        values = [float(t) for t in (v if isinstance(v, (list, tuple)) else [v])]
        if not all(math.isfinite(t) for t in values) or (name == "std" and min(values) <= 0):
            raise ConfigError("normalization", f"{name} must be finite (std > 0), got {v!r}")
        out[name] = values if isinstance(v, (list, tuple)) else values[0]
    return out


MAX_SIZE = 1 << 24  # bound on in_features, num_classes, hidden, units_per_class a header may state


def _size(value: object, name: str, source: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_SIZE:  # type() excludes bool and float
        raise DataError(source, f"checkpoint header does not describe a model: {name} must be an int "
                        f"in 1..{MAX_SIZE}, got {value!r}")
    return value


def _implied_shapes(arch: str, fields: Mapping[str, Any], in_features: int, num_classes: int,
                    source: str, header_sizes: object = None) -> dict[str, list[int]]:
    """The shapes of the size-carrying weights that the header's sizes imply (checked before building)."""
    if arch == "mlp":
        hidden = _size(fields.get("hidden", ModelConfig.hidden), "model.hidden", source)
        return {"fc1.weight": [hidden, in_features], "fc2.weight": [num_classes, hidden]}
    if arch == "lenet5":
        sizes = header_sizes if isinstance(header_sizes, dict) else {}
        channels = sizes.get("channels")
        if in_features != LENET_IN or not isinstance(channels, list) or len(channels) != 2:
            raise DataError(source, f"checkpoint header does not describe a LeNet-5: in_features must be "
                            f"{LENET_IN} and sizes.channels a list of two ints, got {in_features}, {channels!r}")
        c1, c2 = (_size(c, "sizes.channels", source) for c in channels)
        hidden = _size(sizes.get("hidden"), "sizes.hidden", source)
        return {"features.0.weight": [c1, 1, 5, 5], "features.4.weight": [c2, c1, 5, 5],
                "classifier.0.weight": [hidden, 16 * c2], "classifier.3.weight": [num_classes, hidden]}
    units = _size(fields.get("units_per_class", ModelConfig.units_per_class), "model.units_per_class", source)
    return {"W": [units * num_classes, in_features], "V": [num_classes, units * num_classes]}


def check_header(header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Types, ranges and the shapes of the tensors present, BEFORE any model is built.

    After this, building the model allocates no more than the file's own weights hold
    (the size-carrying weights have the header's shapes; the rest are vectors of those
    sizes), so a header cannot make the loader allocate more than the file plus O(sizes).
    """
    arch, fields = header.get("architecture"), header.get("model")
    if not isinstance(arch, str) or arch not in SIZE_TENSORS:
        raise DataError(source, f"checkpoint header does not describe a model: architecture {arch!r} "
                        f"is not one of {sorted(SIZE_TENSORS)}")
    if not isinstance(fields, dict) or fields.get("model") != arch:
        raise DataError(source, "checkpoint header does not describe a model: 'model' must be a dict "
                        "whose 'model' is the architecture")
    in_features = _size(header.get("in_features"), "in_features", source)
    num_classes = _size(header.get("num_classes"), "num_classes", source)
    for name, shape in _implied_shapes(arch, fields, in_features, num_classes, source,
                                                header.get("sizes")).items():
        if name not in tensors or list(tensors[name].shape) != shape:
            found = list(tensors[name].shape) if name in tensors else "missing"
            raise DataError(source, f"tensor {name!r} is {found}, the header implies {shape}")
    for name, kind in (("run", str), ("run_config", dict), ("extra", dict)):
        if not isinstance(header.get(name), (kind, type(None))):
            raise DataError(source, f"checkpoint header field {name!r} must be a {kind.__name__} or null")
    try:
        check_normalization(header.get("normalization"))
    except (LookupError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise DataError(source, f"checkpoint header field 'normalization' is unusable ({exc})") from None
    if header.get("format") == HEADER_KEY:
        listed = header.get("tensors")
        if not isinstance(listed, dict) or not all(isinstance(v, dict) for v in listed.values()):
            raise DataError(source, "checkpoint header's tensor list is not a dict of dicts")
        actual = {k: (dtype_name(v), list(v.shape)) for k, v in tensors.items()}
        listed = {k: (v.get("dtype"), v.get("shape")) for k, v in listed.items()}
        differ = [f"{k}: {actual.get(k, 'missing')} (listed: {listed.get(k, 'unexpected')})"
                  for k in sorted(set(listed) | set(actual)) if listed.get(k) != actual.get(k)]
        if differ:
            raise DataError(source, f"tensors differ from the list in the checkpoint header: {'; '.join(differ)}")
