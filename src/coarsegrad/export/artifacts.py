"""Load whatever ``coarsegrad export``/``eval`` is pointed at, and the data it was trained on.

Accepted paths: a run directory (``model.safetensors`` inside), a checkpoint or run model
file (PyTorch model), an integer-model file or a packed quantized-model file (NumPy
engines) or an ``.onnx`` file (onnxruntime). Every one of them carries the checkpoint header — architecture, model
config, normalisation, run config — from which the evaluation data is rebuilt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.export.integer import IntegerModel
from coarsegrad.export.integer_io import is_integer_file, load_integer
from coarsegrad.export.qmodel import QuantizedModel
from coarsegrad.export.qmodel_io import is_quantized_file, load_quantized
from coarsegrad.io import tensorfile
from coarsegrad.io.checkpoint import load_checkpoint

HEADER_PROP = "coarsegrad.header"
IMAGE_DATASETS = ("mnist", "fashion-mnist", "kmnist")


@dataclass
class Artifact:
    """A loaded network: ``kind`` says which of ``model``/``integer``/``session`` is set."""

    kind: Literal["torch", "integer", "onnx"]
    path: Path
    header: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    integer: IntegerModel | QuantizedModel | None = None
    session: Any = None

    @property
    def in_features(self) -> int | None:
        value = self.header.get("in_features")
        return int(value) if value is not None else None

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits [N, K] for float32 inputs ``x`` [N, d]."""
        if self.kind == "torch":
            assert self.model is not None
            with torch.inference_mode():
                return self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
        if self.kind == "integer":
            assert self.integer is not None
            return self.integer.logits(x)
        from coarsegrad.export.onnx_graph import run_onnx

        return run_onnx(self.session, x)["logits"]


def resolve_model_file(path: str | Path) -> Path:
    """``path`` itself if a file; ``path/model.safetensors`` if a run directory; else DataError."""
    path = Path(path)
    if path.is_dir():
        inner = path / "model.safetensors"
        if not inner.is_file():
            raise DataError(str(path), "is a directory without model.safetensors (not a run directory)")
        return inner
    if not path.is_file():
        raise DataError(str(path), "no such file or directory")
    return path


def _onnx_header(path: Path) -> dict[str, Any]:
    try:
        import onnx
    except ImportError:
        raise ConfigError("format", "reading .onnx files needs: pip install 'coarsegrad[export]'") from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise DataError(str(path), f"not a valid ONNX file ({type(exc).__name__})") from None
    try:  # protobuf hands out proto2 strings as they are; bytes that are not UTF-8 fail here
        props = {str(p.key): str(p.value) for p in proto.metadata_props}
        header = json.loads(props[HEADER_PROP]) if HEADER_PROP in props else {}
    except (UnicodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise DataError(str(path), f"ONNX metadata {HEADER_PROP!r} is not UTF-8 JSON") from None
    in_features = header.get("in_features") if isinstance(header, dict) else None
    if not isinstance(header, dict) or not (in_features is None or (type(in_features) is int and in_features > 0)):
        raise DataError(str(path), f"ONNX metadata {HEADER_PROP!r} is not a header (a JSON object, "
                        "in_features a positive int)")
    return header


def load_artifact(path: str | Path) -> Artifact:
    """The network at ``path`` (see the module docstring)."""
    file = resolve_model_file(path)
    if file.suffix == ".onnx":
        from coarsegrad.export.onnx_graph import onnx_session

        header = _onnx_header(file)
        return Artifact("onnx", file, header, session=onnx_session(file))
    _, metadata = tensorfile.load(file)
    if is_integer_file(metadata):
        integer, meta = load_integer(file)
        header = dict(meta.get("header") or {})
        header.setdefault("in_features", integer.in_features)
        return Artifact("integer", file, header, integer=integer)
    if is_quantized_file(metadata):
        qm, qmeta = load_quantized(file)
        header = dict(qmeta.get("header") or {})
        header["in_features"] = qm.in_features
        return Artifact("integer", file, header, integer=qm)
    model, header = load_checkpoint(file)
    return Artifact("torch", file, header, model=model)


def scalar_normalization(header: dict[str, Any], data_dir: str | None = None) -> tuple[float, float]:
    """(mean, std) of the inputs x = (pixel/255 − mean)/std: the header's ``normalization``, else
    (a ``coarsegrad train`` run) the training split's pixel statistics of the image data set in
    its run config, as :func:`coarsegrad.prepare_dataset` normalised it; ConfigError for
    per-channel values or a record without image data."""
    norm = header.get("normalization")
    if isinstance(norm, dict):
        if isinstance(norm.get("mean"), list) or isinstance(norm.get("std"), list):
            raise ConfigError("normalization", "the integer-only form needs one (mean, std), not per-feature values")
        try:
            return float(norm["mean"]), float(norm["std"])
        except (KeyError, TypeError, ValueError):
            raise DataError("normalization", f"is not a (mean, std) record: {norm!r}") from None
    run_config = header.get("run_config") or {}
    data = run_config.get("data") if isinstance(run_config, dict) else None
    name = data.get("data") if isinstance(data, dict) else None
    if name not in IMAGE_DATASETS:
        raise ConfigError("normalization", "a model with quantized weights is exported integer-only from uint8 "
                          "pixels; that needs image data (mnist, fashion-mnist, kmnist) and its normalisation, "
                          "which this record does not hold")
    from coarsegrad.data.datasets import load_dataset, require_dataset
    from coarsegrad.data.splits import pixel_mean_std

    assert isinstance(data, dict)  # name came from it
    source = require_dataset(str(name), data_dir or data.get("data_dir"))
    return pixel_mean_std(load_dataset(str(name), "train", source)[0])


def load_eval_data(header: dict[str, Any], data: str, split: str = "test",
                   data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(x float32 [N, d], y int64 [N], description) for ``data`` = ``synthetic`` or an image set.

    ``synthetic`` regenerates the run's own data from its saved data config and seeds
    (the training set; the synthetic problem has no separate test split). Image data
    sets use :func:`coarsegrad.prepare_dataset` and the header's normalisation.
    """
    if data == "synthetic":
        run_config = header.get("run_config") or {}
        if not isinstance(run_config.get("data"), dict):
            raise ConfigError("data", "synthetic evaluation needs the run's data config; "
                              "pass a run directory or a checkpoint saved with the run config")
        from coarsegrad.config import DataConfig
        from coarsegrad.training.run import build_data

        try:
            cfg = DataConfig(**run_config["data"])
            seed = int(run_config.get("train", {}).get("seed", 0))
        except TypeError as exc:
            raise DataError("config", f"the run's data config is unusable ({exc})") from None
        if cfg.data != "synthetic":
            raise ConfigError("data", f"the run was trained on {cfg.data!r}, not synthetic data")
        built = build_data(cfg, seed)
        return built.x_train.numpy(), built.y_train.numpy(), f"synthetic (training set regenerated from the run's data config, seed {seed})"
    if data not in IMAGE_DATASETS:
        raise ConfigError("data", f"unknown data {data!r}; valid: synthetic, {', '.join(IMAGE_DATASETS)}")
    from coarsegrad.data.splits import prepare_dataset

    splits = prepare_dataset(data, data_dir)
    x_t, y = splits.split(split)
    x = x_t.numpy()
    norm = header.get("normalization")
    if isinstance(norm, dict) and not isinstance(norm.get("mean"), list):
        mean, std = float(norm["mean"]), float(norm["std"])
        if (mean, std) != (splits.mean, splits.std):  # re-normalise to what the model saw
            x = ((x.astype(np.float64) * splits.std + splits.mean - mean) / std).astype(np.float32)
    return x, y.numpy(), f"{data} {split} split ({splits.source})"


def input_range(header: dict[str, Any], data_dir: str | None = None) -> tuple[float, float]:
    """The (min, max) of the model's inputs, for int8 input quantization.

    Image data: pixel/255 ∈ [0, 1] normalised, ((0 − mean)/std, (1 − mean)/std).
    Synthetic: min and max of the regenerated training data.
    """
    run_config = header.get("run_config") or {}
    name = (run_config.get("data") or {}).get("data") if isinstance(run_config, dict) else None
    norm = header.get("normalization")
    if isinstance(norm, dict) and not isinstance(norm.get("mean"), list):
        mean, std = float(norm["mean"]), float(norm["std"])
        return (0.0 - mean) / std, (1.0 - mean) / std
    if name == "synthetic":
        x, _, _ = load_eval_data(header, "synthetic")
        return float(x.min()), float(x.max())
    if name in IMAGE_DATASETS:
        from coarsegrad.data.splits import prepare_dataset

        splits = prepare_dataset(name, data_dir or run_config["data"].get("data_dir"))
        return (0.0 - splits.mean) / splits.std, (1.0 - splits.mean) / splits.std
    raise ConfigError("input_range", "cannot tell the input range from the run record; "
                      "pass --input-range LO HI")
