"""coarsegrad: quantized-activation networks trained with coarse gradients (STEs).

Implements Long, Yin & Xin, "Learning Quantized Neural Nets by Coarse Gradient Method
for Non-linear Classification" (arXiv 2011.11256). Public API::

    import coarsegrad as cg
    cg.staircase(x, bits, alpha)          # σ(x) = α·clip(⌈x/α⌉, 0, 2^b − 1)
    cg.optimal_alpha(bits)                # MSE-optimal step for a half-Gaussian input
    cg.get_ste("clipped_relu")            # identity | relu | clipped_relu | log_tailed_relu
    cg.quantized_relu(x, bits, alpha, ste)
    cg.TwoLayerNet(...), cg.MLP(...), cg.train(model, X, y, cg.TrainConfig(...))
"""

from coarsegrad.autograd import QuantReLU, StaircaseSTEFunction, quantize_model, quantized_relu
from coarsegrad.coarse import coarse_gradient
from coarsegrad.errors import ConfigError, DataError, InputError, TrainingDiverged
from coarsegrad.models import MLP, TwoLayerNet
from coarsegrad.quantizer import optimal_alpha, q_max, staircase, staircase_codes
from coarsegrad.ste import (
    BUILTIN_STES,
    STE,
    custom_ste,
    get_ste,
    is_monotone,
    monotone_violations,
)
from coarsegrad.synthetic import orthogonal_subspaces
from coarsegrad.train import History, TrainConfig, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_STES", "ConfigError", "DataError", "History", "InputError", "MLP", "QuantReLU",
    "STE", "StaircaseSTEFunction", "TrainConfig", "TrainingDiverged", "TwoLayerNet",
    "coarse_gradient", "custom_ste", "evaluate", "get_ste", "is_monotone", "monotone_violations",
    "optimal_alpha", "orthogonal_subspaces", "q_max", "quantize_model", "quantized_relu",
    "staircase", "staircase_codes", "train",
]
