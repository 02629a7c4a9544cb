"""Packed quantized-model files under mutation: the exact original or a DataError, never a crash."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from coarsegrad.errors import DataError
from coarsegrad.export.qmodel import to_quantized
from coarsegrad.export.qmodel_io import QMODEL_KEY, load_quantized, save_quantized
from coarsegrad.io import tensorfile
from coarsegrad.models.networks import LeNet5
from coarsegrad.quant.qlayers import quantize_weights
from coarsegrad.quant.weight_spec import WeightQuant
from fuzzing import byte_mutation, identical_or_data_error, json_edit

_MODEL = quantize_weights(LeNet5(channels=(2, 3), hidden=5, generator=torch.Generator().manual_seed(0)),
                          WeightQuant("uniform", 3, granularity="channel")).eval()
QM = to_quantized(_MODEL, (0.1307, 0.3081))
FOLDER = Path(tempfile.mkdtemp(prefix="coarsegrad-qmodel-fuzz-"))
atexit.register(shutil.rmtree, FOLDER, True)
ORIGINAL = save_quantized(FOLDER / "m.qint.safetensors", QM, {"architecture": "lenet5"})
BLOB = ORIGINAL.read_bytes()
TENSORS, METADATA = tensorfile.load(ORIGINAL)
META = json.loads(METADATA[QMODEL_KEY])


def _same(result) -> bool:
    model, _ = result
    return len(model.layers) == len(QM.layers) and all(
        np.array_equal(a.q, b.q) and a.pool == b.pool and all(
            np.array_equal(getattr(a, k), getattr(b, k)) for k in ("thresholds", "scale", "bias")
            if getattr(b, k) is not None) for a, b in zip(model.layers, QM.layers, strict=True)) \
        and (model.mean, model.std, model.input_shape) == (QM.mean, QM.std, QM.input_shape)


@settings(max_examples=100, deadline=None)
@given(byte_mutation(BLOB))
def test_byte_mutations(blob):
    path = FOLDER / "mutated.safetensors"
    path.write_bytes(blob)
    identical_or_data_error(lambda: load_quantized(path), _same)


@settings(max_examples=60, deadline=None)
@given(json_edit(META))
def test_crafted_metadata(meta):
    """Metadata edited and the file re-signed (a valid digest): DataError or a model that runs."""
    path = FOLDER / "crafted.safetensors"
    tensorfile.save(path, TENSORS, {QMODEL_KEY: json.dumps(meta)})
    try:
        model, _ = load_quantized(path)
    except DataError:
        return
    model.logits(np.zeros((2, model.in_features), np.float32))  # what loads, runs


@pytest.mark.parametrize("change", [
    lambda t: t.update({"layer0.codes": torch.full_like(t["layer0.codes"], 0xFF)}),   # codes past the 3-bit range
    lambda t: t.update({"layer1.thresholds": t["layer1.thresholds"].to(torch.int64)}),
    lambda t: t.update({"layer3.scale": t["layer3.scale"][:-1]}),
    lambda t: t.pop("layer3.bias"),
    lambda t: t.update({"layer3.bias": torch.full_like(t["layer3.bias"], float("nan"))}),
])
def test_crafted_tensors_are_data_errors(change, tmp_path):
    tensors = dict(TENSORS)
    change(tensors)
    tensorfile.save(tmp_path / "m.safetensors", tensors, METADATA)
    with pytest.raises(DataError):
        load_quantized(tmp_path / "m.safetensors")


def test_huge_stated_shapes_are_refused_before_unpacking(tmp_path):
    meta = json.loads(json.dumps(META))
    meta["layers"][2]["shape"] = [1 << 20, 1 << 20]
    tensorfile.save(tmp_path / "m.safetensors", TENSORS, {QMODEL_KEY: json.dumps(meta)})
    with pytest.raises(DataError, match="shape"):
        load_quantized(tmp_path / "m.safetensors")
