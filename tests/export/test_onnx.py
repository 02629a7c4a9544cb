"""ONNX export: standard operators only, and PyTorch = onnxruntime = NumPy engine, counted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import bn_mlp, boundary_inputs, count_oracle, identity_mlp, identity_two_layer

import coarsegrad as cg
from coarsegrad.export import build_onnx, onnx_session, run_onnx, to_integer, to_onnx
from coarsegrad.export.agreement import agreement, engine_outputs, onnx_outputs, torch_outputs

pytest.importorskip("onnxruntime")

STANDARD_OPS = {"Gemm", "MatMul", "MatMulInteger", "QuantizeLinear", "Add", "Sub", "Mul", "Div", "Ceil",
                "Clip", "Cast", "Less", "GreaterOrEqual"}
BOUNDARY_CASES = [(1, None), (2, None), (4, 0.1), (3, 1 / 3), (8, 0.01)]


def _session(integer, exact=True):
    return onnx_session(build_onnx(integer, with_codes=True, exact=exact), threads=1)


@pytest.mark.parametrize("int8", [False, True])
def test_graph_uses_standard_operators_only(int8, gen):
    model = bn_mlp(10, 12, 3, 2, gen)
    integer = to_integer(model, weights="int8", input_range=(-3, 3)) if int8 else to_integer(model)
    proto = build_onnx(integer, with_codes=True)
    assert all(node.domain in ("", "ai.onnx") for node in proto.graph.node)
    assert {node.op_type for node in proto.graph.node} <= STANDARD_OPS
    assert [o.name for o in proto.graph.output] == ["logits", "codes", "preact"]


@pytest.mark.parametrize("bits,alpha", BOUNDARY_CASES)
@pytest.mark.parametrize("builder", [identity_two_layer, identity_mlp])
@pytest.mark.parametrize("rounding", ["ceil", "nearest", "floor"])
def test_onnx_codes_exact_on_boundary_inputs(bits, alpha, builder, rounding, gen):
    alpha = cg.optimal_alpha(bits) if alpha is None else alpha
    model = builder(6, bits, alpha, gen, rounding)
    x = boundary_inputs(bits, alpha, 6, gen)
    integer = to_integer(model)
    ort = onnx_outputs(_session(integer), x)
    ref = torch_outputs(model, x)
    assert np.array_equal(ort.preact, x)
    assert np.array_equal(ort.codes, count_oracle(x, bits, alpha, rounding))
    assert np.array_equal(ort.codes, ref.codes)
    assert np.array_equal(ort.pred, ref.pred)
    assert np.array_equal(ort.pred, integer.predict(x))


def test_plain_ceil_is_not_exact_at_the_edges(gen):
    """Without the correction, ⌈z/α⌉ misses edges fl(jα) whose quotient rounds up: the test can fail."""
    wrong = 0
    for bits, alpha in [(4, 0.1), (3, 1 / 3), (8, 0.01), (2, 0.7)]:
        model = identity_two_layer(6, bits, alpha, gen)
        x = boundary_inputs(bits, alpha, 6, gen)
        ort = onnx_outputs(_session(to_integer(model), exact=False), x)
        wrong += int((ort.codes != count_oracle(x, bits, alpha)).sum())
    assert wrong > 0


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("rounding", ["ceil", "nearest", "floor"])
def test_torch_onnx_engine_agree_on_random_data(bits, rounding, gen):
    model = bn_mlp(40, 96, 6, bits, gen, rounding)
    x = (torch.randn(4000, 40, generator=gen) * 2 + 0.5).numpy()
    integer = to_integer(model)
    report = agreement(model, integer, x, session=_session(integer))
    for pair in ("torch_vs_engine", "onnx_vs_engine", "torch_vs_onnx"):
        counts = report[pair]
        assert counts["code_disagree_unexplained"] == 0, (pair, counts)
        assert counts["pred_disagree_unexplained"] == 0, (pair, counts)
        assert counts["code_disagree"] <= report["units_near_threshold"]


def test_fixed_two_layer_ties_are_the_only_prediction_differences(gen):
    model = cg.TwoLayerNet(20, 4, 8, bits=2, init_scale=3.0, generator=gen).eval()
    x = (torch.randn(3000, 20, generator=gen)).numpy()
    integer = to_integer(model)
    report = agreement(model, integer, x, session=_session(integer))
    for pair in ("torch_vs_engine", "onnx_vs_engine", "torch_vs_onnx"):
        assert report[pair]["pred_disagree_unexplained"] == 0
        assert report[pair]["code_disagree_unexplained"] == 0
    # with V a block of ones the engine's logits are α·(integer sums): exact ties pick the first class
    eng = engine_outputs(integer, x)
    sums = eng.codes.astype(np.int64).reshape(len(x), 4, 8).sum(axis=2)
    assert np.array_equal(eng.pred, sums.argmax(axis=1))


@pytest.mark.parametrize("rounding", ["ceil", "nearest", "floor"])
def test_int8_onnx_equals_int8_engine(rounding, gen):
    model = bn_mlp(40, 96, 6, 2, gen, rounding)
    x = (torch.rand(3000, 40, generator=gen) * 6 - 3).numpy()
    integer = to_integer(model, weights="int8", input_range=(-3.0, 3.0))
    report = agreement(model, integer, x, y=model(torch.from_numpy(x)).argmax(1).numpy(),
                       session=_session(integer))
    counts = report["onnx_vs_engine"]
    assert counts["code_disagree_unexplained"] == 0 and counts["pred_disagree_unexplained"] == 0
    # After the exact integer product both compute fl32(fl32(acc)·scale) + b: bitwise equal
    ort = onnx_outputs(_session(integer), x)
    assert np.array_equal(ort.preact, integer.preactivations(x))
    assert np.array_equal(ort.codes, integer.codes(x)) and counts["code_disagree"] == 0
    # int8 changes few codes relative to the float model, and they are reported
    assert report["torch_vs_engine"]["code_disagree"] < 0.05 * report["codes_total"]
    assert report["accuracy"]["engine"] > 0.9  # agreement with the float model's own predictions


def test_to_onnx_writes_a_loadable_file(tmp_path, gen):
    model = bn_mlp(10, 12, 3, 2, gen)
    path = to_onnx(model, tmp_path / "m.onnx")
    x = torch.randn(50, 10, generator=gen)
    out = run_onnx(onnx_session(path), x.numpy())
    assert list(out) == ["logits"]
    assert np.array_equal(out["logits"].argmax(1), model(x).argmax(1).numpy())
    np.testing.assert_allclose(out["logits"], model(x).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_bad_onnx_file_is_a_data_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(cg.DataError, match="onnxruntime"):
        onnx_session(bad)
