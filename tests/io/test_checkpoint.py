"""Checkpoints: exact round trips; truncated, tampered or mismatched files are DataErrors."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch

import coarsegrad as cg
from coarsegrad.config import DataConfig, ModelConfig
from coarsegrad.errors import ConfigError, DataError
from coarsegrad.io import tensorfile
from coarsegrad.io.checkpoint import HEADER_KEY, load_checkpoint, save_checkpoint
from coarsegrad.models.build import build_model
from coarsegrad.training.loop import TrainConfig
from coarsegrad.training.run import run_training

CONFIGS = [
    ModelConfig(model="mlp", hidden=8, batchnorm=True, bits=2),
    ModelConfig(model="mlp", hidden=8, bits=4, alpha=0.3, ste="relu"),
    ModelConfig(model="two_layer", units_per_class=3, bits=1),
    ModelConfig(model="two_layer", units_per_class=3, second_layer="trained", bits=3, ste="log_tailed_relu"),
]


def _model(cfg: ModelConfig, seed: int = 5):
    model = build_model(cfg, 6, 4, seed)
    if cfg.batchnorm:  # non-trivial running statistics
        model.train()
        with torch.no_grad():
            model(torch.randn(64, 6, generator=torch.Generator().manual_seed(seed)) + 1)
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.safetensors"
    model = _model(CONFIGS[0])
    save_checkpoint(path, model, config=CONFIGS[0], normalization=(0.1307, 0.3081), run="runs/r1",
                    extra={"note": "test"})
    return path, model


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.model}-{c.bits}b")
def test_round_trip_is_exact(cfg, tmp_path):
    model = _model(cfg)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, config=cfg)
    loaded, header = load_checkpoint(path)
    assert type(loaded) is type(model) and not loaded.training
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=False):
        assert k1 == k2 and v1.dtype == v2.dtype and torch.equal(v1, v2)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x), loaded(x))
    assert (header["bits"], header["ste"], header["architecture"]) == (cfg.bits, cfg.ste, cfg.model)
    assert header["alpha"] == loaded.act.alpha == model.act.alpha


def test_header_contents(saved):
    path, _ = saved
    _, header = load_checkpoint(path)
    assert header["normalization"] == {"mean": 0.1307, "std": 0.3081}
    assert header["run"] == "runs/r1" and header["extra"] == {"note": "test"}
    assert header["in_features"] == 6 and header["num_classes"] == 4
    assert header["model"]["alpha"] == cg.optimal_alpha(2)
    assert header["tensors"]["fc1.weight"] == {"dtype": "float32", "shape": [8, 6]}
    assert len(header["sha256"]) == 64


def test_no_pickle_ever(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(DataError):
        load_checkpoint(path)
    torch.save({"fc1.weight": torch.zeros(2)}, tmp_path / "t.safetensors")
    with pytest.raises(DataError):
        load_checkpoint(tmp_path / "t.safetensors")


def test_missing_empty_and_foreign_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_checkpoint(tmp_path / "absent.safetensors")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(DataError, match="truncated"):
        load_checkpoint(tmp_path / "empty")
    tensorfile.save(tmp_path / "plain.safetensors", {"a": torch.zeros(2)})
    with pytest.raises(DataError, match="not a coarsegrad checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")


def test_every_truncation_is_detected(saved, tmp_path):
    path, _ = saved
    blob = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    for n in sorted(set(range(0, 40)) | set(range(0, len(blob), 97)) | {len(blob) - 1}):
        cut.write_bytes(blob[:n])
        with pytest.raises(DataError):
            load_checkpoint(cut)


def test_bit_flips_anywhere_are_detected(saved, tmp_path):
    path, _ = saved
    blob = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", blob[:8])
    rng = np.random.default_rng(0)
    positions = list(range(8 * 8)) + list(rng.integers(64, (8 + n) * 8, 300)) + list(rng.integers((8 + n) * 8, len(blob) * 8, 100))
    bad = tmp_path / "flip.safetensors"
    for bit in positions:
        flipped = bytearray(blob)
        flipped[bit // 8] ^= 1 << (bit % 8)
        bad.write_bytes(bytes(flipped))
        with pytest.raises(DataError):
            load_checkpoint(bad)


def _rewrite(path, out, change_tensors=None, change_header=None):
    tensors, meta = tensorfile.load(path)
    header = json.loads(meta[HEADER_KEY])
    if change_tensors:
        change_tensors(tensors)
    if change_header:
        change_header(header)
    tensorfile.save(out, tensors, {HEADER_KEY: json.dumps(header)})
    return out


@pytest.mark.parametrize("change,match", [
    (lambda t: t.__setitem__("fc1.weight", torch.zeros(8, 7)), "fc1.weight"),
    (lambda t: t.__setitem__("fc2.bias", torch.zeros(5)), "fc2.bias"),
    (lambda t: t.__setitem__("fc1.weight", t["fc1.weight"].double()), "float64"),
    (lambda t: t.__setitem__("norm.num_batches_tracked", t["norm.num_batches_tracked"].int()), "int32"),
    (lambda t: t.pop("norm.running_var"), "missing"),
    (lambda t: t.__setitem__("extra.weight", torch.zeros(1)), "unexpected"),
])
def test_tensors_that_do_not_fit_the_header(saved, tmp_path, change, match):
    path, _ = saved
    with pytest.raises(DataError, match=match):
        load_checkpoint(_rewrite(path, tmp_path / "bad.safetensors", change_tensors=change))


@pytest.mark.parametrize("change,match", [
    (lambda h: h["model"].__setitem__("hidden", 9), "fc1.weight"),
    (lambda h: h.__setitem__("bits", 3), "inconsistent"),
    (lambda h: (h.__setitem__("alpha", 0.5), h["model"].__setitem__("alpha", 0.5),
                h["quant"].__setitem__("alpha", 0.5)), "SHA-256"),
    (lambda h: h["quant"].__setitem__("rounding", "floor"), "inconsistent"),
    (lambda h: h.__setitem__("normalization", {"mean": 0.0, "std": 1.0}), "SHA-256"),
    (lambda h: h["model"].__setitem__("ste", "no_such_ste"), "does not describe"),
    (lambda h: h["model"].__setitem__("surprise", 1), "does not describe"),
    (lambda h: h.__setitem__("version", 99), "version"),
    (lambda h: h.pop("in_features"), "does not describe"),
    (lambda h: h["tensors"].__setitem__("fc1.weight", {"dtype": "float32", "shape": [6, 8]}), "list"),
])
def test_tampered_headers(saved, tmp_path, change, match):
    path, _ = saved
    with pytest.raises(DataError, match=match):
        load_checkpoint(_rewrite(path, tmp_path / "bad.safetensors", change_header=change))


def test_tampered_weights_fail_the_digest(saved, tmp_path):
    path, _ = saved
    change = lambda t: t["fc1.weight"].__setitem__((0, 0), t["fc1.weight"][0, 0] + 1e-3)  # noqa: E731
    with pytest.raises(DataError, match="SHA-256"):
        load_checkpoint(_rewrite(path, tmp_path / "bad.safetensors", change_tensors=change))


def test_save_rejects_a_config_that_does_not_describe_the_model(tmp_path):
    model = _model(CONFIGS[0])
    with pytest.raises(ConfigError, match="config"):
        save_checkpoint(tmp_path / "m", model, config=ModelConfig(model="mlp", hidden=8, batchnorm=True, bits=4))
    with pytest.raises(DataError, match="fc1.weight"):
        save_checkpoint(tmp_path / "m", model, config=ModelConfig(model="mlp", hidden=9, batchnorm=True, bits=2))
    with pytest.raises(ConfigError, match="normalization"):
        save_checkpoint(tmp_path / "m", model, config=CONFIGS[0], normalization=(0.0, 0.0))
    assert not (tmp_path / "m").exists()


def test_loads_the_model_file_of_a_training_run(tmp_path):
    data = DataConfig(num_classes=3, dim=9, subspace_dim=2, samples_per_class=10)
    model_cfg = ModelConfig(model="mlp", hidden=5, batchnorm=True, bits=2)
    run_training(data, model_cfg, TrainConfig(steps=3), tmp_path / "run", progress=False)
    model, header = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert header["format"] == "coarsegrad.run" and header["run"] == str(tmp_path / "run")
    assert header["run_config"]["data"]["dim"] == 9 and model.fc1.weight.shape == (5, 9)
    # and it can be re-saved as a checkpoint with the run config, then loaded again
    save_checkpoint(tmp_path / "c.safetensors", model, config=header["run_config"], run=header["run"])
    again, header2 = load_checkpoint(tmp_path / "c.safetensors")
    assert header2["run_config"] == header["run_config"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=False))


# ---------------------------------------------------------------- rounding: default and old files

def _strip_rounding(path, out, drop_quant=False):
    """``path`` as a file written before the rounding field: no ``rounding`` in the header's
    model (nor in ``quant``, or no ``quant`` at all), signed again as the old writer did."""
    from coarsegrad.io.checkpoint import _digest

    tensors, meta = tensorfile.load(path)
    header = json.loads(meta[HEADER_KEY])
    del header["model"]["rounding"]
    if drop_quant:
        del header["quant"]
    else:
        del header["quant"]["rounding"]
    header.pop("sha256")
    header["sha256"] = _digest(header, tensors)
    tensorfile.save(out, tensors, {HEADER_KEY: json.dumps(header)})
    return out


def test_new_checkpoints_always_write_the_rounding(tmp_path):
    cfg = ModelConfig(model="two_layer", units_per_class=3, bits=1)
    assert cfg.rounding == "nearest"  # the default
    save_checkpoint(tmp_path / "m", _model(cfg), config=cfg)
    header = json.loads(tensorfile.load(tmp_path / "m")[1][HEADER_KEY])
    assert header["model"]["rounding"] == header["quant"]["rounding"] == "nearest"


@pytest.mark.parametrize("drop_quant", [False, True])
def test_a_checkpoint_without_rounding_loads_as_ceil(tmp_path, drop_quant):
    cfg = ModelConfig(model="two_layer", units_per_class=3, bits=1, rounding="ceil")
    model = _model(cfg)
    save_checkpoint(tmp_path / "m", model, config=cfg)
    old = _strip_rounding(tmp_path / "m", tmp_path / "old.safetensors", drop_quant)
    loaded, header = load_checkpoint(old)
    assert "rounding" not in header["model"] and loaded.act.quant.rounding == "ceil"
    assert loaded.act.quant == model.act.quant
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x), model(x))
