"""ONNX export of a plain ``nn.Sequential`` (e.g. made by :func:`coarsegrad.quantize_model`).

One case of the general traced path :func:`coarsegrad.export.onnx_traced.build_traced_onnx`
(same op table, same errors); kept for its name.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from coarsegrad.errors import ConfigError
from coarsegrad.export.onnx_traced import SUPPORTED, build_traced_onnx

__all__ = ["SUPPORTED", "build_sequential_onnx"]


def build_sequential_onnx(model: nn.Sequential, input_shape: tuple[int, ...], *, exact: bool = True) -> Any:
    """The ``onnx.ModelProto`` of ``model`` on inputs of per-sample shape ``input_shape``;
    ConfigError naming the first layer it cannot export."""
    if not isinstance(model, nn.Sequential):
        raise ConfigError("model", f"build_sequential_onnx needs an nn.Sequential, got {type(model).__name__}")
    return build_traced_onnx(model, input_shape, exact=exact, name="coarsegrad_sequential",
                             props={"architecture": "sequential"})
