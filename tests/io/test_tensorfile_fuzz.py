"""Property: a mutated tensor file loads as the exact original or raises DataError, never
anything else, and never allocates much (see tests/fuzzing.py)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings

from coarsegrad.errors import DataError
from coarsegrad.io.tensorfile import dumps, loads
from fuzzing import byte_mutation, identical_or_data_error, join, raw_header_bytes, split

TENSORS = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.arange(5, dtype=torch.int64),
           "m": torch.tensor([True, False]), "h": torch.ones(2, dtype=torch.bfloat16), "e": torch.zeros(0, 3)}
METADATA = {"config": '{"a": 1}', "note": "ünïcode"}
BLOB = dumps(TENSORS, METADATA)


def _same(result) -> bool:
    tensors, metadata = result
    return metadata == METADATA and tensors.keys() == TENSORS.keys() and all(
        tensors[k].dtype == t.dtype and torch.equal(tensors[k], t) for k, t in TENSORS.items())


@settings(max_examples=300, deadline=None)
@given(byte_mutation(BLOB))
def test_byte_mutations(blob):
    identical_or_data_error(lambda: loads(blob, "f"), _same)


@settings(max_examples=300, deadline=None)
@given(raw_header_bytes(split(BLOB)[0]))
def test_header_edits(raw):
    identical_or_data_error(lambda: loads(join(raw, split(BLOB)[1]), "f"), _same)


def _edited(edit) -> bytes:
    header, body = split(BLOB)
    edit(header)
    return join(json.dumps(header).encode(), body)


@pytest.mark.parametrize("edit,match", [
    (lambda h: h["w"].update(shape=[float("inf"), 4]), "shape"),  # fuzz campaign: inf shape → OverflowError
    (lambda h: h["w"].update(shape=[-3, -4]), "shape"),
    (lambda h: h["w"].update(shape=[2**62, 2**62]), "do not fit"),
    (lambda h: h["w"].update(shape=[3.0, 4.0]), "shape"),
    (lambda h: h.update(w=[h["w"]]), "must be a dict"),  # list instead of dict
    (lambda h: h["w"].pop("dtype"), "must be a dict with keys"),
    (lambda h: h["__metadata__"].update(config={"a": 1}), "strings"),
    (lambda h: h["__metadata__"].pop("coarsegrad.sha256"), "older coarsegrad"),
    (lambda h: h["__metadata__"].update(note="edited"), "SHA-256"),
])
def test_header_regressions(edit, match):
    with pytest.raises(DataError, match=match):
        loads(_edited(edit), "f.safetensors")


def test_non_utf8_and_deeply_nested_headers():
    body = split(BLOB)[1]
    with pytest.raises(DataError, match="corrupt"):
        loads(join(b'{"\xff": 1}', body), "f")
    with pytest.raises(DataError, match="corrupt"):
        loads(join(b"[" * 100_000 + b"]" * 100_000, body), "f")


def test_a_flipped_body_bit_is_caught_by_the_digest():
    blob = bytearray(BLOB)
    blob[-40] ^= 0x10
    with pytest.raises(DataError, match="SHA-256"):
        loads(bytes(blob), "f")
