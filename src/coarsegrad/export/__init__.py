"""Exact deployment: integer form, NumPy engine, bit packing and ONNX export.

    import coarsegrad as cg
    im = cg.export.to_integer(model)                  # float32 first layer
    im8 = cg.export.to_integer(model, weights="int8", input_range=(lo, hi))
    im.predict(x), im.codes(x)                        # NumPy only
    packed = cg.export.pack_codes(codes, bits)        # 8/w codes per byte
    cg.export.to_onnx(model, "model.onnx")            # needs the 'export' extra (LeNet5 too)
    cg.export.to_onnx(my_net, "net.onnx", input_shape=(1, 28, 28))   # any traceable model
    cg.export.layer_agreement(my_net, cg.export.onnx_session(p), x, (1, 28, 28))  # per layer
    cg.export.save_integer(path, im), cg.export.load_integer(path)
    qm = cg.export.to_quantized(qmodel, (mean, std))   # quantized weights: integer-only form
    qm.predict(x); cg.export.save_quantized(path, qm); cg.export.build_qmodel_onnx(qm)
    cg.export.deployed_size(qmodel)                   # (packed bytes, float32 bytes)

``onnx`` and ``onnxruntime`` are imported only inside the functions that use them.
"""

from coarsegrad.export.integer import IntegerModel, threshold_codes, thresholds, to_integer
from coarsegrad.export.integer_io import load_integer, save_integer
from coarsegrad.export.layer_agreement import layer_agreement
from coarsegrad.export.onnx_graph import build_onnx, onnx_session, run_onnx, to_onnx
from coarsegrad.export.onnx_lenet import build_lenet_onnx
from coarsegrad.export.onnx_qmodel import build_qmodel_onnx
from coarsegrad.export.onnx_traced import build_traced_onnx
from coarsegrad.export.packing import pack_codes, packed_size, packed_width, unpack_codes
from coarsegrad.export.qmodel import QuantizedModel, deployed_size, images_per_second, to_quantized
from coarsegrad.export.qmodel_io import load_quantized, save_quantized

__all__ = [
    "IntegerModel", "QuantizedModel", "build_lenet_onnx", "build_onnx", "build_qmodel_onnx", "deployed_size",
    "images_per_second", "load_quantized", "save_quantized", "to_quantized", "build_traced_onnx", "layer_agreement",
    "load_integer", "onnx_session", "pack_codes", "packed_size",
    "packed_width", "run_onnx", "save_integer", "threshold_codes", "thresholds", "to_integer", "to_onnx",
    "unpack_codes",
]
