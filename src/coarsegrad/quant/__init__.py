"""The maths of the quantized activation: the spec (:class:`ActQuant`), the roundings and
optimal α, the STEs (μ′), the kernels (the one forward and backward rule), the autograd
function and modules."""

from coarsegrad.quant.autograd import (
    QuantReLU,
    StaircaseSTEFunction,
    quantize_model,
    quantized_relu,
    staircase,
    staircase_codes,
)
from coarsegrad.quant.monotone import is_monotone, monotone_violations
from coarsegrad.quant.spec import ActQuant, as_quant
from coarsegrad.quant.staircase import ROUNDING_OFFSET, half_gaussian_mse, optimal_alpha
from coarsegrad.quant.ste import BUILTIN_STES, STE, Piece, custom_ste, get_ste, ste_table

__all__ = [
    "ActQuant", "BUILTIN_STES", "Piece", "QuantReLU", "ROUNDING_OFFSET", "STE", "StaircaseSTEFunction",
    "as_quant", "custom_ste", "get_ste", "half_gaussian_mse", "is_monotone", "monotone_violations",
    "optimal_alpha", "quantize_model", "quantized_relu", "staircase", "staircase_codes", "ste_table",
]
