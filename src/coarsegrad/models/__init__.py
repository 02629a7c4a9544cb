"""Networks with quantized activations, the builder from a config, and the closed-form
coarse gradient of the paper's two-layer network."""

from coarsegrad.models.build import build_model
from coarsegrad.models.networks import MLP, LeNet5, TwoLayerNet, init_linear, make_linear

__all__ = ["MLP", "LeNet5", "TwoLayerNet", "build_model", "init_linear", "make_linear"]
