"""Checkpoints: weights as safetensors plus a JSON header that rebuilds the model.

The header (metadata key ``coarsegrad.checkpoint``) holds the architecture, the input
and output sizes, the model config (bits, α resolved, STE used in training, …),
optional input normalisation (mean, std), a pointer to the training run record, the
expected name/shape/dtype of every tensor and a SHA-256 digest of
(header without the digest ‖ tensor bytes in name order). Loading never unpickles:
it rebuilds the model from the header with :func:`coarsegrad.models.build_model` and
accepts the file only if every tensor matches; anything else is a :class:`DataError`.

Architectures: ``two_layer``, ``mlp`` and ``lenet5`` (whose header also holds
``sizes`` = {channels: [c₁, c₂], hidden: h}; every QuantReLU of a model shares the one
spec saved whole as ``quant``; the one WeightQuant of quantized-weight layers is saved
whole as ``weight_quant``, null for float weights, and the latent float weights with the
BinaryRelax buffers are the tensors). Sizes are validated against the tensors present before
any model is built. Models made by ``quantize_model`` are saved with
:mod:`coarsegrad.io.quantized` instead.

``load_checkpoint`` also reads the ``model.safetensors`` of a ``coarsegrad train`` run
directory (metadata key ``config``: the resolved run config). A header or run config
without ``rounding`` was written before the field existed and loads as ``ceil``
(:func:`coarsegrad.config.saved_model_fields`); new files always carry it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coarsegrad.config import ModelConfig, saved_model_fields
from coarsegrad.errors import ConfigError, DataError
from coarsegrad.io import tensorfile
from coarsegrad.io.checkpoint_header import (
    FORMAT_VERSION,
    HEADER_KEY,
    LENET_IN,
    SIZE_TENSORS,
    check_header,
    check_normalization,
    dtype_name,
    lenet_sizes,
)
from coarsegrad.io.records import remove_stale_temporaries
from coarsegrad.models.build import build_model
from coarsegrad.models.networks import MLP, LeNet5, TwoLayerNet
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.qlayers import quantize_weights, weight_spec_of
from coarsegrad.quant.spec import ActQuant


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _digest(header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "sha256"},
                                  sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        h.update(name.encode() + b"\0" + _tensor_bytes(tensors[name]))
    return h.hexdigest()


def _model_sizes(model: nn.Module) -> tuple[str, int, int]:
    if isinstance(model, TwoLayerNet):
        return "two_layer", model.in_features, model.num_classes
    if isinstance(model, MLP):
        return "mlp", model.fc1.in_features, model.fc2.out_features
    if isinstance(model, LeNet5):
        return "lenet5", LENET_IN, int(model.state_dict()["classifier.3.weight"].shape[0])
    raise ConfigError("model", f"checkpoints support TwoLayerNet, MLP and LeNet5, got {type(model).__name__}; "
                      "save a quantize_model'd model with save_quantized_state")


def _model_config(config: ModelConfig | Mapping[str, Any], arch: str) -> dict[str, Any]:
    if isinstance(config, ModelConfig):
        fields = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        fields = dict(config.get("model", config)) if isinstance(config.get("model"), Mapping) else dict(config)
    else:
        raise ConfigError("config", f"must be a ModelConfig or a dict, got {type(config).__name__}")
    try:
        model_config = ModelConfig(**{**fields, "model": fields.get("model", arch)})
    except TypeError as exc:
        raise ConfigError("config", f"is not a model config ({exc})") from None
    fields = dataclasses.asdict(model_config)
    fields["alpha"] = model_config.act_quant().alpha
    return fields


def _act(model: nn.Module) -> QuantReLU:
    """The model's QuantReLU (the first one; every other must hold the same spec)."""
    acts = [m for m in model.modules() if isinstance(m, QuantReLU)]
    plain = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not acts or plain:
        raise ConfigError("model", f"needs QuantReLU activations only, found {len(acts)} QuantReLU "
                          f"and {len(plain)} ReLU")
    if any(a.quant != acts[0].quant for a in acts):
        raise ConfigError("model", "its QuantReLU layers hold different specs; use save_quantized_state")
    return acts[0]


def _quant_fields(quant: ActQuant) -> dict[str, Any]:
    """The spec as saved (``ActQuant.to_dict``), without the provenance of α."""
    return {k: v for k, v in quant.to_dict().items() if k != "alpha_rule"}


def _weight_fields(source: nn.Module | ModelConfig) -> dict[str, Any] | None:
    """The WeightQuant of a model's layers or of a config, as saved (None: float weights)."""
    spec = source.weight_quant() if isinstance(source, ModelConfig) else weight_spec_of(source)
    return None if spec is None else spec.to_dict()


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    config: ModelConfig | Mapping[str, Any],
    normalization: tuple[object, object] | Mapping[str, object] | None = None,
    run: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Atomically write ``model`` and its header to ``path``; returns the header.

    ``config``: the :class:`ModelConfig` (or its dict, or a resolved run config with a
    ``model`` section) that builds ``model``; it must agree with the model's bits, α,
    STE and tensor shapes. ``normalization``: (mean, std) of the inputs, scalars or
    per-feature lists. ``run``: the training run directory. ``extra``: JSON-able notes.
    """
    arch, in_features, num_classes = _model_sizes(model)
    fields = _model_config(config, arch)
    act = _act(model)
    quant = _quant_fields(act.quant)
    if fields["model"] != arch or _quant_fields(ModelConfig(**fields).act_quant()) != quant:
        raise ConfigError("config", f"does not describe the model ({fields['model']}, bits={fields['bits']}, "
                          f"alpha={fields['alpha']}, ste={fields['ste']}, rounding={fields['rounding']} "
                          f"vs {arch}, {act.extra_repr()})")
    weights = _weight_fields(model)
    if weights != _weight_fields(ModelConfig(**fields)):
        raise ConfigError("config", f"does not describe the model's weights ({fields['weight_kind']} in the "
                                    f"config vs {weights or 'float'} in the model)")
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    sizes = lenet_sizes(state) if arch == "lenet5" else None
    _check_tensors(state, _build(fields, in_features, num_classes, sizes).state_dict(), "model")
    header: dict[str, Any] = {
        "format": HEADER_KEY, "version": FORMAT_VERSION, "architecture": arch,
        "in_features": in_features, "num_classes": num_classes, "model": fields,
        **({"sizes": sizes} if sizes is not None else {}),
        "bits": act.bits, "alpha": float(act.alpha), "ste": act.ste.name, "quant": quant,
        "weight_quant": weights,
        "normalization": check_normalization(normalization), "run": None if run is None else str(run),
        "run_config": dict(config) if isinstance(config, Mapping) and "model" in config else None,
        "extra": dict(extra or {}),
        "tensors": {k: {"dtype": dtype_name(v), "shape": list(v.shape)} for k, v in sorted(state.items())},
    }
    header["sha256"] = _digest(header, state)
    try:
        meta = json.dumps(header, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError("extra", f"must be JSON-serialisable ({exc})") from None
    remove_stale_temporaries(Path(path).parent, Path(path).name)  # left by an interrupted save
    tensorfile.save(path, state, {HEADER_KEY: meta})
    return header


def _build(fields: Mapping[str, Any], in_features: int, num_classes: int,
           sizes: Mapping[str, Any] | None = None) -> nn.Module:
    config = ModelConfig(**saved_model_fields(fields))  # a file before the rounding field: ceil
    if config.model == "lenet5" and sizes is not None:
        c1, c2 = sizes["channels"]
        lenet = LeNet5(num_classes, channels=(c1, c2), hidden=sizes["hidden"],
                       generator=torch.Generator().manual_seed(0), quant=config.act_quant())
        weights = config.weight_quant()
        return lenet if weights is None else quantize_weights(lenet, weights)
    return build_model(config, in_features, num_classes, seed=0)


def _check_tensors(found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        raise DataError(source, f"tensors do not fit the model: missing {missing}, unexpected {extra}")
    for name, want in expected.items():
        got = found[name]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise DataError(source, f"tensor {name!r} is {dtype_name(got)} {list(got.shape)}, "
                            f"the model needs {dtype_name(want)} {list(want.shape)}")


def _header_from_run(metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor], source: str) -> dict[str, Any]:
    try:
        run_config = json.loads(metadata["config"])
        fields = saved_model_fields(run_config["model"])
        arch = fields["model"]
        if arch not in SIZE_TENSORS:
            raise DataError(source, f"checkpoints support {' and '.join(SIZE_TENSORS)} models, not {arch!r}")
        first, last = SIZE_TENSORS[arch]
        in_features, num_classes = int(tensors[first].shape[1]), int(tensors[last].shape[0])
        sizes = None
        if arch == "lenet5":
            in_features, sizes = LENET_IN, lenet_sizes(tensors)
    except (LookupError, TypeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(source, f"run model file has an unusable config or tensors ({exc!r})") from None
    return {"format": "coarsegrad.run", "architecture": arch, "in_features": in_features,
            "num_classes": num_classes, "model": fields, **({"sizes": sizes} if sizes else {}),
            "bits": fields.get("bits"),
            "alpha": fields.get("alpha"), "ste": fields.get("ste"), "normalization": None,
            "run": str(Path(source).parent), "run_config": run_config, "extra": {}}


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, header) from a checkpoint or a run's ``model.safetensors``.

    Raises :class:`DataError` if the file is missing, truncated or tampered with, or its
    tensors do not fit the model its header describes.
    """
    source = str(path)
    tensors, metadata = tensorfile.load(path)
    if HEADER_KEY in metadata:
        try:
            header = json.loads(metadata[HEADER_KEY])
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise DataError(source, f"corrupt checkpoint header ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != HEADER_KEY:
            raise DataError(source, "checkpoint header has no 'format': coarsegrad.checkpoint")
        if header.get("version") != FORMAT_VERSION:
            raise DataError(source, f"checkpoint version {header.get('version')!r} is not {FORMAT_VERSION}")
    elif "config" in metadata:
        header = _header_from_run(metadata, tensors, source)
    else:
        raise DataError(source, "not a coarsegrad checkpoint (no header in the safetensors metadata)")
    check_header(header, tensors, source)
    try:
        fields = saved_model_fields(header["model"])
        in_features, num_classes = int(header["in_features"]), int(header["num_classes"])
        consistent = fields.get("model") == header["architecture"] and all(
            header[k] == fields.get(k) for k in ("bits", "alpha", "ste"))
        model = _build(fields, in_features, num_classes, header.get("sizes"))
        if "quant" in header:  # the spec saved whole (files before it carry bits/alpha/ste only)
            consistent = consistent and saved_model_fields(header["quant"]) == _quant_fields(_act(model).quant)
        if "weight_quant" in header:  # files before quantized weights have none (float weights)
            consistent = consistent and header["weight_quant"] == _weight_fields(model)
    except (LookupError, TypeError, ValueError, ArithmeticError, RuntimeError) as exc:  # ConfigError is a ValueError
        raise DataError(source, f"checkpoint header does not describe a model ({exc!r})") from None
    if not consistent:
        raise DataError(source, "checkpoint header is inconsistent (architecture/bits/alpha/ste/weight_quant)")
    _check_tensors(tensors, model.state_dict(), source)
    if header["format"] == HEADER_KEY:
        if header.get("sha256") != _digest(header, tensors):
            raise DataError(source, "SHA-256 digest mismatch: the file was modified or corrupted")
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model, header
