"""coarsegrad: quantized-activation networks trained with coarse gradients (STEs).

Implements Long, Yin & Xin, "Learning Quantized Neural Nets by Coarse Gradient Method
for Non-linear Classification" (arXiv 2011.11256). Public API::

    import coarsegrad as cg
    q = cg.ActQuant(bits=2, alpha=None, ste="clipped_relu", rounding="nearest")  # the spec (default rounding)
    cg.staircase(x, q)                    # σ(x) = α·c(x); nearest: α·clip(round(x/α), 0, 2^b − 1)
    cg.optimal_alpha(bits, "nearest")     # MSE-optimal step for a half-Gaussian input
    cg.get_ste("clipped_relu")            # identity | relu | clipped_relu | log_tailed_relu
    cg.quantized_relu(x, q), cg.QuantReLU(q), cg.quantize_model(model, act=q, weight=None)
    w = cg.WeightQuant("binary", granularity="channel", method="bcgd")   # quantized weights
    cg.QuantLinear.from_float(linear, w), cg.QuantConv2d.from_float(conv, w), cg.quantize_weights(model, w)
    cg.TwoLayerNet(..., quant=q), cg.MLP(...), cg.train(model, X, y, cg.TrainConfig(...))
    cg.load_dataset("mnist", "train")     # uint8 [N,28,28], int64 [N] from IDX files
    cg.prepare_dataset("mnist")           # both splits normalised, [N,784], on a device
    cg.save_checkpoint(path, model, config=...), cg.load_checkpoint(path)
    model, config = cg.load_run("runs/r1")                      # a `coarsegrad train` run directory
    cg.save_quantized_state(path, model), cg.load_quantized_state(MyNet(), path)  # quantize_model'd
    cg.export.to_integer(model), cg.export.to_onnx(model, path), cg.export.pack_codes(c, bits)
"""

import importlib.metadata as _metadata

from coarsegrad import export  # noqa: E402  (onnx is imported lazily inside it)
from coarsegrad.data.datasets import load_dataset
from coarsegrad.data.splits import DatasetSplits, prepare_dataset
from coarsegrad.data.synthetic import orthogonal_subspaces, synthetic_data
from coarsegrad.errors import ConfigError, DataError, InputError, TrainingDiverged
from coarsegrad.io.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from coarsegrad.io.quantized import load_quantized_state, save_quantized_state
from coarsegrad.io.runs import load_run
from coarsegrad.models.coarse import coarse_gradient
from coarsegrad.models.networks import MLP, TwoLayerNet
from coarsegrad.quant.autograd import (
    QuantReLU,
    StaircaseSTEFunction,
    quantized_relu,
    staircase,
    staircase_codes,
)
from coarsegrad.quant.convert import QuantizeReport, freeze_learned, quantize_model
from coarsegrad.quant.monotone import is_monotone, monotone_violations
from coarsegrad.quant.qlayers import QuantConv2d, QuantLinear, quantize_weights
from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.staircase import optimal_alpha
from coarsegrad.quant.ste import BUILTIN_STES, STE, custom_ste, get_ste, ste_table
from coarsegrad.quant.weight_spec import WeightQuant
from coarsegrad.training.loop import History, TrainConfig, evaluate, train
from coarsegrad.training.state import TrainState, load_train_state, save_train_state

try:
    __version__ = _metadata.version("coarsegrad")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "unknown"

__all__ = [
    "ActQuant", "BUILTIN_STES", "coarse_gradient", "ConfigError", "custom_ste", "DataError",
    "DatasetSplits", "evaluate", "export", "freeze_learned", "get_ste", "History", "InputError", "is_monotone",
    "load_checkpoint", "load_dataset", "load_quantized_state", "load_run", "load_train_state", "MLP",
    "monotone_violations",
    "optimal_alpha", "orthogonal_subspaces", "prepare_dataset", "quantize_model", "quantized_relu",
    "QuantConv2d", "QuantizeReport", "QuantLinear", "QuantReLU", "quantize_weights",
    "save_checkpoint", "save_quantized_state", "save_train_state", "staircase",
    "staircase_codes", "StaircaseSTEFunction", "STE", "ste_table", "synthetic_data", "train", "TrainConfig",
    "TrainingDiverged",
    "TrainState", "TwoLayerNet", "WeightQuant",
]
