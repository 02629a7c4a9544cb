"""Checkpoints under mutation: exact original or DataError, decided before any model is built."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings

from coarsegrad.config import DataConfig, ModelConfig
from coarsegrad.errors import DataError
from coarsegrad.io import tensorfile
from coarsegrad.io.checkpoint import HEADER_KEY, _digest, load_checkpoint, save_checkpoint
from coarsegrad.models.build import build_model
from coarsegrad.training.loop import TrainConfig
from coarsegrad.training.run import run_training
from fuzzing import RSS_BOUND_MB, byte_mutation, identical_or_data_error, json_edit, peak_rss_mb

CFG = ModelConfig(model="mlp", hidden=6, batchnorm=True, bits=2)
MODEL = build_model(CFG, 5, 3, seed=1).eval()
FOLDER = Path(tempfile.mkdtemp(prefix="coarsegrad-ckpt-fuzz-"))
atexit.register(shutil.rmtree, FOLDER, True)
ORIGINAL = FOLDER / "m.safetensors"
save_checkpoint(ORIGINAL, MODEL, config=CFG, normalization=(0.5, 0.25), extra={"note": "x"})
BLOB = ORIGINAL.read_bytes()
TENSORS, METADATA = tensorfile.load(ORIGINAL)
HEADER = json.loads(METADATA[HEADER_KEY])


def _same(result) -> bool:
    model, _ = result
    want = MODEL.state_dict()
    got = model.state_dict()
    return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@settings(max_examples=150, deadline=None)
@given(byte_mutation(BLOB))
def test_byte_mutations(blob):
    path = FOLDER / "mutated.safetensors"
    path.write_bytes(blob)
    identical_or_data_error(lambda: load_checkpoint(path), _same)


def _resign(header: object, tensors=TENSORS) -> Path:
    """A crafted file: edited header, inner and file digests recomputed (what an attacker can do)."""
    if isinstance(header, dict):
        header["sha256"] = _digest(header, tensors)
    path = FOLDER / "crafted.safetensors"
    tensorfile.save(path, tensors, {HEADER_KEY: json.dumps(header)})
    return path


@settings(max_examples=150, deadline=None)
@given(json_edit(HEADER))
def test_crafted_headers(header):
    path = _resign(header)
    identical_or_data_error(lambda: load_checkpoint(path), _same)


@pytest.mark.parametrize("edit,match", [
    (lambda h: h.update(num_classes=2**24), "fc2.weight"),  # fuzz campaign: 15 KB file → 6.5 GB
    (lambda h: h.update(num_classes=2**40), "num_classes"),
    (lambda h: h["model"].update(hidden=2**24), "fc1.weight"),
    (lambda h: h.update(in_features=float("inf")), "in_features"),
    (lambda h: h.update(in_features=True), "in_features"),
    (lambda h: h.update(architecture=["mlp"]), "architecture"),
    (lambda h: h.update(model=[h["model"]]), "'model' must be a dict"),
    (lambda h: h.update(tensors=[h["tensors"]]), "tensor list"),
    (lambda h: h.update(normalization={"mean": "a", "std": 1}), "normalization"),
    (lambda h: h.update(extra=[]), "extra"),
])
def test_crafted_header_regressions(edit, match):
    header = json.loads(json.dumps(HEADER))
    edit(header)
    before = peak_rss_mb()
    with pytest.raises(DataError, match=match):
        load_checkpoint(_resign(header))
    assert peak_rss_mb() - before < RSS_BOUND_MB


def test_list_instead_of_header_object():
    with pytest.raises(DataError, match="format"):
        load_checkpoint(_resign([HEADER]))


def test_a_flipped_body_bit_of_a_run_model_file(tmp_path):
    data = DataConfig(num_classes=3, dim=6, subspace_dim=2, samples_per_class=4)
    run_training(data, ModelConfig(model="two_layer", units_per_class=2), TrainConfig(steps=2), tmp_path, progress=False)
    path = tmp_path / "model.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01  # the campaign saw W[0,0] = -1.6e37 accepted by eval
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="SHA-256"):
        load_checkpoint(path)


def test_run_model_file_with_a_huge_hidden_size(tmp_path):
    tensors, meta = TENSORS, {"config": json.dumps({"model": {**HEADER["model"], "hidden": 2**24}})}
    tensorfile.save(tmp_path / "model.safetensors", tensors, meta)
    with pytest.raises(DataError, match="fc1.weight"):
        load_checkpoint(tmp_path / "model.safetensors")
