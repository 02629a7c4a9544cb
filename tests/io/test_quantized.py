"""save_quantized_state / load_quantized_state: a user's own quantize_model'd class, no pickle."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import coarsegrad as cg
from coarsegrad.errors import DataError
from coarsegrad.io import tensorfile
from coarsegrad.io.quantized import QUANT_KEY


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # the user's own init; the test owns the global RNG here
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


@pytest.fixture
def saved(tmp_path):
    model = cg.quantize_model(net(1), cg.ActQuant(3, alpha=0.25, ste="relu", rounding="nearest"))
    path = tmp_path / "q.safetensors"
    header = cg.save_quantized_state(path, model)
    return path, model, header


def test_round_trip_into_a_fresh_skeleton(saved):
    path, model, header = saved
    assert header["quant"] == {"1": model[1].quant.to_dict()}
    loaded = cg.load_quantized_state(net(2), path)  # different weights, plain ReLU
    assert isinstance(loaded[1], cg.QuantReLU) and loaded[1].quant == model[1].quant and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x), loaded(x))
    # a skeleton already quantized with another spec takes the file's
    other = cg.quantize_model(net(3), 1)
    assert cg.load_quantized_state(other, path)[1].quant == model[1].quant


def _rewrite(path, out, header_edit=None, tensors_edit=None):
    tensors, meta = tensorfile.load(path)
    header = json.loads(meta[QUANT_KEY])
    if header_edit:
        header_edit(header)
    if tensors_edit:
        tensors_edit(tensors)
    tensorfile.save(out, tensors, {QUANT_KEY: json.dumps(header)})
    return out


@pytest.mark.parametrize("skeleton", [
    lambda: nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)),        # shapes differ
    lambda: nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)),        # no ReLU at "1"
    lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU()),
    lambda: cg.quantize_model(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU())),
    lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3, bias=False)),
])
def test_skeleton_that_does_not_fit_is_data_error_and_untouched(saved, skeleton):
    path, _, _ = saved
    model = skeleton()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kinds = [type(m) for m in model.modules()]
    with pytest.raises(DataError):
        cg.load_quantized_state(model, path)
    if type(model[-1]) is cg.QuantReLU:  # the unsaved QuantReLU is what is refused
        return
    assert [type(m) for m in model.modules()] == kinds
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("edit", [
    lambda h: h["quant"]["1"].update(bits=0),
    lambda h: h["quant"]["1"].update(colour="red"),
    lambda h: h["quant"].update({"0": h["quant"]["1"]}),      # a Linear is not an activation
    lambda h: h.update(version=2),
    lambda h: h.update(quant=[1, 2]),
])
def test_bad_specs_are_data_errors(saved, tmp_path, edit):
    with pytest.raises(DataError):
        cg.load_quantized_state(net(), _rewrite(saved[0], tmp_path / "t.safetensors", header_edit=edit))


def test_tampered_bytes_fail_the_digest(saved, tmp_path):
    path = saved[0]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    (tmp_path / "t.safetensors").write_bytes(bytes(raw))
    with pytest.raises(DataError):
        cg.load_quantized_state(net(), tmp_path / "t.safetensors")


def test_a_model_without_quant_relu_is_refused(tmp_path):
    with pytest.raises(cg.ConfigError, match="QuantReLU"):
        cg.save_quantized_state(tmp_path / "q.safetensors", net())


def test_plain_relus_left_in_float_are_recorded(tmp_path):
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    model[1] = cg.QuantReLU(2)
    header = cg.save_quantized_state(tmp_path / "q.safetensors", model)
    assert header["relu"] == ["3"] and list(header["quant"]) == ["1"]
    fresh = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    loaded = cg.load_quantized_state(fresh, tmp_path / "q.safetensors")
    assert type(loaded[1]) is cg.QuantReLU and type(loaded[3]) is nn.ReLU
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.eval()(x), loaded(x))
    wrong = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    with pytest.raises(DataError, match="not ReLU"):
        cg.load_quantized_state(wrong, tmp_path / "q.safetensors")


def test_a_file_whose_specs_have_no_rounding_loads_as_ceil(tmp_path):
    """Quantized-state files written before the rounding field: ceil, as they were."""
    model = cg.quantize_model(net(1), cg.ActQuant(1, alpha=0.25, ste="relu", rounding="ceil"))
    path = tmp_path / "q.safetensors"
    header = cg.save_quantized_state(path, model)
    assert header["quant"]["1"]["rounding"] == "ceil"  # new files always write it
    tensors, meta = tensorfile.load(path)
    old = json.loads(meta[QUANT_KEY])
    del old["quant"]["1"]["rounding"]
    tensorfile.save(path, tensors, {QUANT_KEY: json.dumps(old)})
    loaded = cg.load_quantized_state(net(2), path)
    assert loaded[1].quant.rounding == "ceil" and loaded[1].quant == model[1].quant
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x), loaded(x))
