"""Train-state files under mutation: exact original or DataError naming the file and field."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings

import coarsegrad as cg
from coarsegrad.errors import ConfigError, DataError, TrainingDiverged
from coarsegrad.io import tensorfile
from coarsegrad.training.state import META_KEY, load_train_state, save_train_state
from fuzzing import byte_mutation, identical_or_data_error, json_edit

X, Y = cg.orthogonal_subspaces(3, 6, 2, 8, generator=torch.Generator().manual_seed(0))
CONFIG = cg.TrainConfig(steps=12, optimizer="adam", lr=0.01, batch_size=5, stop_at_perfect=False, log_every=2)


def _net():
    return cg.TwoLayerNet(6, 3, 2, bits=2, second_layer="trained", generator=torch.Generator().manual_seed(1))


STATES: dict[int, object] = {}
cg.train(_net(), X, Y, CONFIG, checkpoint_every=7, on_checkpoint=lambda s: STATES.__setitem__(s.step, s))
STATE = STATES[7]
FOLDER = Path(tempfile.mkdtemp(prefix="coarsegrad-state-fuzz-"))
atexit.register(shutil.rmtree, FOLDER, True)
ORIGINAL = FOLDER / "checkpoint.safetensors"
save_train_state(ORIGINAL, STATE)
BLOB = ORIGINAL.read_bytes()
TENSORS, METADATA = tensorfile.load(ORIGINAL)
META = json.loads(METADATA[META_KEY])


def _same(state) -> bool:
    return (state.step, state.position, state.window, state.history, state.extra) == (
        STATE.step, STATE.position, STATE.window, STATE.history, STATE.extra) and torch.equal(
        state.rng, STATE.rng) and torch.equal(state.order, STATE.order) and all(
        torch.equal(state.model[k], v) for k, v in STATE.model.items())


@settings(max_examples=80, deadline=None)
@given(byte_mutation(BLOB))
def test_byte_mutations(blob):
    path = FOLDER / "mutated.safetensors"
    path.write_bytes(blob)
    identical_or_data_error(lambda: load_train_state(path), _same)


def _crafted(meta: object, tensors=TENSORS) -> Path:
    path = FOLDER / "crafted.safetensors"
    tensorfile.save(path, tensors, {META_KEY: json.dumps(meta)})
    return path


@settings(max_examples=80, deadline=None)
@given(json_edit(META))
def test_crafted_metadata_loads_only_if_every_field_fits(meta):
    path = _crafted(meta)
    try:
        state = load_train_state(path)
    except DataError:
        return
    # it passed the schema: resuming works, is refused as another config, or diverges (a crafted lr)
    try:
        cg.train(_net(), X, Y, CONFIG, resume=state)
    except (ConfigError, TrainingDiverged):
        pass


def _edit(change):
    meta = json.loads(json.dumps(META))
    change(meta)
    return _crafted(meta)


@pytest.mark.parametrize("change,field", [
    (lambda m: m.update(step=-1_000_000), "step"),  # fuzz campaign: a million extra steps
    (lambda m: m.update(step=7.0), "step"),
    (lambda m: m["history"]["loss"].pop(), "history"),
    (lambda m: m["history"]["loss"].__setitem__(0, "nan"), "history.loss"),
    (lambda m: m["history"]["step"].__setitem__(0, 99), "history.step"),
    (lambda m: m["history"].update(steps_run=3), "history.steps_run"),
    (lambda m: m.update(history=[m["history"]]), "history"),
    (lambda m: m.update(window=[0.0, 5, 2]), "window"),
    (lambda m: m.update(window={"a": 1}), "window"),
    (lambda m: m.update(position=10**9), "position"),
    (lambda m: m["optimizer"].update(lr=[]), "optimizer.lr"),
    (lambda m: m["optimizer"].update(scalars={"x": {}}), "optimizer.scalars"),
    (lambda m: m.update(extra={"checkpoint_every": -2}), "extra.checkpoint_every"),
    (lambda m: m.pop("param_groups"), "param_groups"),
])
def test_metadata_regressions(change, field):
    with pytest.raises(DataError, match=f"'{field}") as info:
        load_train_state(_edit(change))
    assert "crafted.safetensors" in str(info.value)


@pytest.mark.parametrize("change,field", [
    (lambda t: t.update(order=torch.zeros_like(t["order"])), "order"),
    (lambda t: t.update(order=t["order"].int()), "order"),
    (lambda t: t.update(rng=t["rng"][:100]), "rng"),
    (lambda t: t.update(rng=torch.full_like(t["rng"], 255)), "rng"),  # 'Invalid mt19937 state' before
    (lambda t: t.update(stray=torch.zeros(1)), "stray"),
])
def test_tensor_regressions(change, field):
    tensors = dict(TENSORS)
    change(tensors)
    with pytest.raises(DataError, match=f"'{field}"):
        load_train_state(_crafted(META, tensors))


def test_a_flipped_body_bit_is_caught(tmp_path):
    blob = bytearray(BLOB)
    blob[-3] ^= 0x04
    (tmp_path / "c.safetensors").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="SHA-256"):
        load_train_state(tmp_path / "c.safetensors")


def test_step_beyond_the_run_is_refused_on_resume():
    with pytest.raises(ConfigError, match="step"):
        cg.train(_net(), X, Y, cg.TrainConfig(steps=5, batch_size=5), resume=load_train_state(ORIGINAL))
