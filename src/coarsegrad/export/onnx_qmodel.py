"""ONNX export of a :class:`~coarsegrad.export.qmodel.QuantizedModel`, standard operators only (opset 17).

Graph (x float32 [N, d], the normalised inputs → logits float32 [N, K]; with ``with_codes``
also ``codes1..k``, uint8, every hidden layer's codes before its pool):

    p     = Clip(Round(x·fl32(255σ) + fl32(255μ)), 0, 255)         the uint8 pixels, as float32
    acc_i = Conv / MatMul(a_i, q_i)          float32, when A_i < 2^24       (a_1 = p, a_i = codes)
          | ConvInteger / MatMulInteger(Cast<uint8>(a_i), q_i int8)  int32, otherwise
    c_i   = ReduceSum(Cast<float>(Unsqueeze(acc_i, −1) > T_i), −1)   [→ MaxPool(k, stride k)]
    logits = Cast<float>(acc_last)·scale + bias

**Exactness.** a_i and q_i hold integers and every partial sum of acc_i is an integer of
magnitude ≤ A_i = max_o Σ_j |q_oj|·c_max (:meth:`QuantizedModel.bound`). Below 2^24 every
such integer is a float32, so Conv/MatMul in float32 return acc_i exactly whatever their
summation order or use of FMA. At or above 2^24 the layer uses the integer operators
(onnxruntime's CPU kernels take uint8 × int8 and accumulate in int32, exact as A_i < 2^31)
and compares in int32. T_i is clipped to [−A_i − 1, A_i], so it is exact in either type.
The pixel recovery and the last layer are the same float32 operations the NumPy engine
makes (:meth:`QuantizedModel.pixels`, :meth:`QuantizedModel.logits_of`), so logits and codes
equal the engine's bit for bit (tested). ``onnx``/``onnxruntime`` are imported on call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from coarsegrad.export.onnx_graph import IR_VERSION, OPSET, _Graph, _require
from coarsegrad.export.qmodel import FLOAT32_EXACT, PIXEL_MAX, QuantizedModel


def integer_ops(model: QuantizedModel, i: int) -> bool:
    """True when layer ``i`` needs MatMulInteger/ConvInteger (A_i ≥ 2^24)."""
    return model.bound(i) >= FLOAT32_EXACT


def build_qmodel_onnx(model: QuantizedModel, *, with_codes: bool = False) -> Any:
    """The ``onnx.ModelProto`` of ``model`` (module docstring)."""
    onnx = _require("onnx")
    helper, tp = onnx.helper, onnx.TensorProto
    g = _Graph(onnx)
    f32 = np.float32
    scale, shift = model.input_affine
    x = "x" if len(model.input_shape) == 1 else g.op("Reshape", "x", g.const("input_shape", np.array([-1, *model.input_shape], np.int64)))
    p = g.op("Clip", g.op("Round", g.op("Add", g.op("Mul", x, g.const("pixel_scale", np.array(scale, f32))),
                                         g.const("pixel_shift", np.array(shift, f32)))),
             g.const("zero", np.array(0.0, f32)), g.const("pixel_max", np.array(PIXEL_MAX, f32)))
    a = p
    n = "N"
    outputs = []
    minus_one = g.const("minus_one", np.array([-1], np.int64))
    for i, layer in enumerate(model.layers):
        if layer.kind == "linear" and len(model.shapes[i]) > 1:
            a = g.op("Flatten", a, axis=1)
        if integer_ops(model, i):
            a8 = g.op("Cast", a, to=tp.UINT8)
            if layer.kind == "conv":
                acc = g.op("ConvInteger", a8, g.const(f"q{i}", layer.q))
            else:
                acc = g.op("MatMulInteger", a8, g.const(f"q{i}", np.ascontiguousarray(layer.q.T)))
            t_type: Any = np.int32
        else:
            q = layer.q.astype(f32)
            if layer.kind == "conv":
                acc = g.op("Conv", a, g.const(f"q{i}", q))
            else:
                acc = g.op("MatMul", a, g.const(f"q{i}", np.ascontiguousarray(q.T)))
            t_type = f32
        if layer.thresholds is None:
            assert layer.scale is not None and layer.bias is not None  # the last layer has them
            if t_type is np.int32:
                acc = g.op("Cast", acc, to=tp.FLOAT)
            g.op("Add", g.op("Mul", acc, g.const("scale", layer.scale)), g.const("bias", layer.bias), out="logits")
            break
        t = layer.thresholds.astype(t_type)
        t = t.reshape(t.shape[0], 1, 1, t.shape[1]) if layer.kind == "conv" else t
        above = g.op("Greater", g.op("Unsqueeze", acc, minus_one), g.const(f"t{i}", t))
        codes = g.op("ReduceSum", g.op("Cast", above, to=tp.FLOAT), minus_one, keepdims=0)
        if with_codes:
            g.op("Cast", codes, to=tp.UINT8, out=f"codes{i + 1}")
            pre_pool = (layer.out_features, *_conv_out(model, i)) if layer.kind == "conv" else (layer.out_features,)
            outputs.append(helper.make_tensor_value_info(f"codes{i + 1}", tp.UINT8, [n, *pre_pool]))
        a = g.op("MaxPool", codes, kernel_shape=[layer.pool] * 2, strides=[layer.pool] * 2) if layer.pool else codes
    outputs.insert(0, helper.make_tensor_value_info("logits", tp.FLOAT, [n, model.num_classes]))
    inputs = [helper.make_tensor_value_info("x", tp.FLOAT, [n, model.in_features])]
    graph = helper.make_graph(g.nodes, f"coarsegrad_quantized_{model.architecture or 'model'}", inputs, outputs, g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="coarsegrad", ir_version=IR_VERSION)
    helper.set_model_props(proto, {"architecture": model.architecture, "weights": "quantized",
                                   "integer_ops_layers": ",".join(str(i + 1) for i in range(len(model.layers))
                                                                  if integer_ops(model, i))})
    onnx.checker.check_model(proto)
    return proto


def _conv_out(model: QuantizedModel, i: int) -> tuple[int, int]:
    """Spatial size of conv layer ``i``'s output before its pool."""
    _, h, w = model.shapes[i]
    _, _, kh, kw = model.layers[i].q.shape
    return h - kh + 1, w - kw + 1
