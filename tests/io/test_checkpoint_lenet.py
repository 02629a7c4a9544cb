"""LeNet-5 checkpoints: exact round trips; sizes checked against the tensors before building."""

from __future__ import annotations

import json

import pytest
import torch

from coarsegrad.config import ModelConfig
from coarsegrad.errors import DataError
from coarsegrad.io import tensorfile
from coarsegrad.io.checkpoint import HEADER_KEY, load_checkpoint, save_checkpoint
from coarsegrad.models.networks import LeNet5
from coarsegrad.quant.spec import ActQuant

CFG = ModelConfig(model="lenet5", bits=3, ste="relu")


def lenet(seed: int = 3, channels: tuple[int, int] = (4, 6), hidden: int = 12) -> LeNet5:
    """A small LeNet-5 with seeded weights and non-trivial batch-norm statistics."""
    g = torch.Generator().manual_seed(seed)
    model = LeNet5(10, channels=channels, hidden=hidden, generator=g, quant=CFG.act_quant())
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 784, generator=g) * 2 + 0.5)
    return model.eval()


def test_lenet5_round_trip_is_exact(tmp_path):
    model = lenet()
    path = tmp_path / "m.safetensors"
    header = save_checkpoint(path, model, config=CFG)
    assert header["sizes"] == {"channels": [4, 6], "hidden": 12} and header["architecture"] == "lenet5"
    assert header["quant"] == {k: v for k, v in CFG.act_quant().to_dict().items() if k != "alpha_rule"}
    loaded, _ = load_checkpoint(path)
    assert type(loaded) is LeNet5 and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    x = torch.randn(50, 784, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x), loaded(x))
    specs = {m.quant for m in loaded.modules() if hasattr(m, "quant")}
    assert specs == {CFG.act_quant()}


def test_lenet5_mismatched_config_or_mixed_specs_refused(tmp_path):
    model = lenet()
    with pytest.raises(ValueError, match="config"):
        save_checkpoint(tmp_path / "m.safetensors", model, config=ModelConfig(model="lenet5", bits=2))
    model.classifier[2].quant = ActQuant(2)
    with pytest.raises(ValueError, match="different specs"):
        save_checkpoint(tmp_path / "m.safetensors", model, config=CFG)


def _rewrite(path, out, edit_header=None, edit_tensors=None):
    tensors, meta = tensorfile.load(path)
    header = json.loads(meta[HEADER_KEY])
    if edit_header:
        edit_header(header)
    if edit_tensors:
        edit_tensors(tensors)
    tensorfile.save(out, tensors, {HEADER_KEY: json.dumps(header)})
    return out


@pytest.mark.parametrize("edit", [
    lambda h: h["sizes"].update(hidden=10 ** 6),           # sizes the tensors do not hold
    lambda h: h["sizes"].update(channels=[4, 6, 1]),
    lambda h: h["sizes"].update(channels=[4, True]),
    lambda h: h.pop("sizes"),
    lambda h: h.update(in_features=100),
    lambda h: h["quant"].update(bits=2),                   # spec differs from the model's
    lambda h: h.update(bits=4),
    lambda h: h["model"].update(ste="identity"),           # changes the digest
])
def test_lenet5_tampered_header_is_data_error(tmp_path, edit):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, lenet(), config=CFG)
    with pytest.raises(DataError):
        load_checkpoint(_rewrite(path, tmp_path / "t.safetensors", edit_header=edit))


def test_lenet5_tampered_tensors_are_data_error(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, lenet(), config=CFG)

    def bump(t):
        t["features.1.running_var"] = t["features.1.running_var"] + 1
    with pytest.raises(DataError, match="digest"):
        load_checkpoint(_rewrite(path, tmp_path / "a.safetensors", edit_tensors=bump))

    def drop(t):
        del t["classifier.1.running_mean"]
    with pytest.raises(DataError, match="classifier.1.running_mean"):
        load_checkpoint(_rewrite(path, tmp_path / "b.safetensors", edit_tensors=drop))


# crafted LeNet-5 headers, digest re-signed (what an attacker can do): exact original or DataError,
# and never a large allocation (the sizes are checked against the tensors before building)
_ORIGINAL = lenet()
_TENSORS = {k: v.clone() for k, v in _ORIGINAL.state_dict().items()}


def _crafted(tmp_path_factory, header):
    from coarsegrad.io.checkpoint import _digest

    if isinstance(header, dict):
        header["sha256"] = _digest(header, _TENSORS)
    path = tmp_path_factory.getbasetemp() / "crafted-lenet.safetensors"
    tensorfile.save(path, _TENSORS, {HEADER_KEY: json.dumps(header)})
    return path


@pytest.mark.parametrize("edit,match", [
    (lambda h: h["sizes"].update(hidden=2**24), "classifier.0.weight"),
    (lambda h: h["sizes"].update(channels=[4, 2**24]), "features.4.weight"),
    (lambda h: h["sizes"].update(channels=[2**40, 6]), "sizes.channels"),
    (lambda h: h.update(num_classes=2**24), "classifier.3.weight"),
    (lambda h: h.update(sizes=[4, 6]), "sizes.channels"),
])
def test_crafted_lenet5_headers_fail_before_building(tmp_path_factory, edit, match):
    from fuzzing import RSS_BOUND_MB, peak_rss_mb

    save_checkpoint(tmp_path_factory.getbasetemp() / "orig.safetensors", _ORIGINAL, config=CFG)
    _, meta = tensorfile.load(tmp_path_factory.getbasetemp() / "orig.safetensors")
    header = json.loads(meta[HEADER_KEY])
    edit(header)
    before = peak_rss_mb()
    with pytest.raises(DataError, match=match):
        load_checkpoint(_crafted(tmp_path_factory, header))
    assert peak_rss_mb() - before < RSS_BOUND_MB


def test_random_header_edits_give_the_original_or_a_data_error(tmp_path_factory):
    from hypothesis import given, settings

    from fuzzing import identical_or_data_error, json_edit

    save_checkpoint(tmp_path_factory.getbasetemp() / "orig.safetensors", _ORIGINAL, config=CFG)
    _, meta = tensorfile.load(tmp_path_factory.getbasetemp() / "orig.safetensors")
    header = json.loads(meta[HEADER_KEY])

    def same(result) -> bool:
        got = result[0].state_dict()
        return got.keys() == _TENSORS.keys() and all(torch.equal(got[k], _TENSORS[k]) for k in _TENSORS)

    @settings(max_examples=80, deadline=None)
    @given(json_edit(header))
    def check(edited):
        path = _crafted(tmp_path_factory, edited)
        identical_or_data_error(lambda: load_checkpoint(path), same)

    check()
