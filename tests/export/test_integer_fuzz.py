"""Integer-model files and ONNX metadata under mutation: exact original or DataError."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import bn_mlp
from hypothesis import given, settings

from coarsegrad.errors import DataError
from coarsegrad.export import to_integer
from coarsegrad.export.integer_io import INTEGER_KEY, load_integer, save_integer
from coarsegrad.io import tensorfile
from fuzzing import byte_mutation, identical_or_data_error, json_edit

INTEGER = to_integer(bn_mlp(5, 6, 3, 2, torch.Generator().manual_seed(0)), weights="int8", input_range=(-2, 3))
FOLDER = Path(tempfile.mkdtemp(prefix="coarsegrad-int-fuzz-"))
atexit.register(shutil.rmtree, FOLDER, True)
ORIGINAL = save_integer(FOLDER / "m.int.safetensors", INTEGER, {"architecture": "mlp"})
BLOB = ORIGINAL.read_bytes()
TENSORS, METADATA = tensorfile.load(ORIGINAL)
META = json.loads(METADATA[INTEGER_KEY])


def _same(result) -> bool:
    model, _ = result
    return all(np.array_equal(getattr(model, k), getattr(INTEGER, k)) for k in ("w1", "b1", "w2", "b2", "w1_scale")) \
        and (model.bits, model.alpha, model.input_lo, model.input_step, model.input_zero) == (
            INTEGER.bits, INTEGER.alpha, INTEGER.input_lo, INTEGER.input_step, INTEGER.input_zero)


@settings(max_examples=100, deadline=None)
@given(byte_mutation(BLOB))
def test_byte_mutations(blob):
    path = FOLDER / "mutated.safetensors"
    path.write_bytes(blob)
    identical_or_data_error(lambda: load_integer(path), _same)


@settings(max_examples=100, deadline=None)
@given(json_edit(META))
def test_crafted_metadata(meta):
    path = FOLDER / "crafted.safetensors"
    tensorfile.save(path, TENSORS, {INTEGER_KEY: json.dumps(meta)})
    try:
        load_integer(path)
    except DataError:
        pass


def test_a_flipped_body_bit_is_caught(tmp_path):
    blob = bytearray(BLOB)
    blob[-7] ^= 0x80  # the campaign: one flip gave W[0,0] = -1.6e37 and eval exited 0
    (tmp_path / "m.safetensors").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="SHA-256"):
        load_integer(tmp_path / "m.safetensors")


@pytest.mark.parametrize("change", [
    lambda m: m.update(bits=float("inf")), lambda m: m.update(alpha="1"), lambda m: m.update(header=[1]),
    lambda m: m.update(weights=["int8"]), lambda m: m.update(input_zero=1.5),
])
def test_metadata_regressions(change, tmp_path):
    meta = json.loads(json.dumps(META))
    change(meta)
    tensorfile.save(tmp_path / "m.safetensors", TENSORS, {INTEGER_KEY: json.dumps(meta)})
    with pytest.raises(DataError, match="integer-model metadata"):
        load_integer(tmp_path / "m.safetensors")


def test_bfloat16_weights_are_a_data_error(tmp_path):
    tensors = {**TENSORS, "b1": TENSORS["b1"].to(torch.bfloat16)}
    tensorfile.save(tmp_path / "m.safetensors", tensors, METADATA)
    with pytest.raises(DataError):
        load_integer(tmp_path / "m.safetensors")


@pytest.mark.parametrize("value", [b"\xff\xfe{}", b"[1, 2]", b"{not json", b'{"in_features": "x"}'])
def test_onnx_metadata_that_is_not_a_utf8_json_header(value, tmp_path):
    onnx = pytest.importorskip("onnx")
    from coarsegrad.export.artifacts import HEADER_PROP, _onnx_header

    graph = onnx.helper.make_graph([], "g", [], [])
    proto = onnx.helper.make_model(graph)
    entry = proto.metadata_props.add()
    entry.key = HEADER_PROP
    path = tmp_path / "m.onnx"
    # write the value's raw bytes into the protobuf (the setter refuses non-UTF-8 str)
    entry.value = "@" * len(value)
    blob = proto.SerializeToString().replace(b"@" * len(value), value)
    path.write_bytes(blob)
    with pytest.raises(DataError, match="ONNX metadata"):
        _onnx_header(path)
