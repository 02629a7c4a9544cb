"""Integer-model files round-trip exactly and reject bad files; the benchmark and agreement helpers work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from export_helpers import bn_mlp

from coarsegrad.errors import DataError
from coarsegrad.export import to_integer
from coarsegrad.export.agreement import near_threshold
from coarsegrad.export.integer_io import INTEGER_KEY, load_integer, save_integer
from coarsegrad.io import tensorfile


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("rounding", ["ceil", "floor"])
def test_integer_file_round_trip_is_exact(int8, rounding, tmp_path, gen):
    model = bn_mlp(10, 12, 3, 2, gen, rounding)
    integer = to_integer(model, weights="int8", input_range=(-2, 3)) if int8 else to_integer(model)
    save_integer(tmp_path / "m.int", integer, {"architecture": "mlp", "tensors": {"dropped": 1}})
    loaded, meta = load_integer(tmp_path / "m.int")
    for name in ("w1", "b1", "w2", "b2", "w1_scale"):
        a, b = getattr(integer, name), getattr(loaded, name)
        assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b))
    assert (loaded.bits, loaded.alpha, loaded.rounding, loaded.input_lo, loaded.input_step, loaded.input_zero) == (
        integer.bits, integer.alpha, rounding, integer.input_lo, integer.input_step, integer.input_zero)
    assert meta["header"] == {"architecture": "mlp"}
    x = torch.randn(64, 10, generator=gen).numpy()
    assert np.array_equal(loaded.codes(x), integer.codes(x))


def _rewrite(src, dst, tensors=None, meta=None):
    t, m = tensorfile.load(src)
    header = json.loads(m[INTEGER_KEY])
    if tensors:
        tensors(t)
    if meta:
        meta(header)
    tensorfile.save(dst, t, {INTEGER_KEY: json.dumps(header)})
    return dst


def test_an_integer_file_without_rounding_loads_as_ceil(tmp_path, gen):
    """Files written before the field: ceil, as they were; new files always carry it."""
    model = bn_mlp(10, 12, 3, 1, gen, "ceil")
    save_integer(tmp_path / "m.int", to_integer(model))
    assert json.loads(tensorfile.load(tmp_path / "m.int")[1][INTEGER_KEY])["rounding"] == "ceil"
    old, _ = load_integer(_rewrite(tmp_path / "m.int", tmp_path / "old.int", meta=lambda h: h.pop("rounding")))
    assert old.rounding == old.quant.rounding == "ceil"
    x = torch.randn(64, 10, generator=gen).numpy()
    assert np.array_equal(old.codes(x), to_integer(model).codes(x))


@pytest.mark.parametrize("tensors,meta,match", [
    (lambda t: t.pop("b2"), None, "are not"),
    (lambda t: t.__setitem__("w1", t["w1"].float()), None, "int8"),
    (lambda t: t.__setitem__("w2", t["w2"][:, :5].contiguous()), None, "w2"),
    (lambda t: t.__setitem__("b1", torch.full_like(t["b1"], float("nan"))), None, "NaN"),
    (None, lambda h: h.__setitem__("version", 7), "unsupported"),
    (None, lambda h: h.__setitem__("bits", 0), "bits"),
    (None, lambda h: h.__setitem__("input_zero", 300), "input"),
    (None, lambda h: h.pop("alpha"), "malformed"),
])
def test_bad_integer_files(tmp_path, gen, tensors, meta, match):
    model = bn_mlp(10, 12, 3, 2, gen)
    save_integer(tmp_path / "m.int", to_integer(model, weights="int8", input_range=(-2, 3)))
    with pytest.raises(DataError, match=match):
        load_integer(_rewrite(tmp_path / "m.int", tmp_path / "bad.int", tensors, meta))


def test_near_threshold_uses_the_edges(gen):
    model = bn_mlp(4, 3, 2, 2, gen)
    integer = to_integer(model)
    e = integer.edges.astype(np.float64)
    z = np.array([[e[1], e[1] + 1e-3, e[2] - 2e-6]], np.float32)
    assert near_threshold(integer, z, np.full(z.shape, 1e-5)).tolist() == [[True, False, True]]


def test_inference_benchmark_smoke(gen):
    pytest.importorskip("onnxruntime")
    from coarsegrad.bench.inference import inference_benchmark

    model = bn_mlp(20, 16, 3, 2, gen)
    x = torch.randn(300, 20, generator=gen).numpy()
    y = model(torch.from_numpy(x)).argmax(1).numpy()
    r = inference_benchmark(model, x, y, input_range=(-4, 4), repeats=2, threads=1)
    assert r["activation_bytes"] == {"float32": 300 * 16 * 4, "uint8_codes": 300 * 16, "packed_codes": 300 * 16 // 4}
    for name in ("torch_fp32", "onnx_fp32", "onnx_int8", "torch_int8_dynamic"):
        assert r[name]["samples_per_s"] > 0 and len(r[name]["seconds"]) == 2
    assert r["torch_fp32"]["accuracy"] == 1.0 and r["onnx_fp32"]["pred_agree_with_torch_fp32"] == 300
    assert r["onnx_int8"]["accuracy"] > 0.9
