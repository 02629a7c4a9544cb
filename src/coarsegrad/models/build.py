"""Build the network a :class:`~coarsegrad.config.ModelConfig` names."""

from __future__ import annotations

import torch
from torch import nn

from coarsegrad.config import ModelConfig
from coarsegrad.errors import ConfigError
from coarsegrad.models.networks import MLP, LeNet5, TwoLayerNet
from coarsegrad.quant.qlayers import quantize_weights
from coarsegrad.validate import MAX_ELEMENTS

LENET_FEATURES = 28 * 28


def check_size(config: ModelConfig, in_features: int, num_classes: int) -> int:
    """The number of weights of the first layers ``config`` asks for on this data, if at
    most :data:`~coarsegrad.validate.MAX_ELEMENTS`; else ``ConfigError`` naming the field
    (checked before anything is allocated). LeNet-5 needs 28×28 images."""
    if config.model == "lenet5":
        if in_features != LENET_FEATURES:
            raise ConfigError("model", f"lenet5 takes 28×28 images ({LENET_FEATURES} features); this data has "
                                       f"{in_features} features: use two_layer or mlp, or an image dataset")
        return 0
    field, width = (("units_per_class", num_classes * config.units_per_class) if config.model == "two_layer"
                    else ("hidden", config.hidden))
    weights = width * (in_features + num_classes)
    if weights > MAX_ELEMENTS:
        raise ConfigError(field, f"the network would have {weights} weights on {in_features} features and "
                                 f"{num_classes} classes, more than the limit of {MAX_ELEMENTS}")
    return weights


def build_model(config: ModelConfig, in_features: int, num_classes: int, seed: int) -> nn.Module:
    """The network named by ``config``, initialised from ``seed`` (size checked by
    :func:`check_size`; ``act="float"``: quant None, plain ReLU). With quantized weights
    (``config.weight_quant()``) every Linear and Conv2d layer of an mlp or lenet5 becomes a
    QuantLinear / QuantConv2d holding the same initial weights as latent weights."""
    check_size(config, in_features, num_classes)
    weights = config.weight_quant()
    if weights is not None and config.model == "two_layer":
        raise ConfigError("weight_kind", "two_layer keeps float weights (its W is no Linear layer); "
                                         "quantized weights need model mlp or lenet5")
    generator = torch.Generator().manual_seed(seed)
    quant = None if config.act == "float" else config.act_quant()
    model: nn.Module
    if config.model == "lenet5":
        model = LeNet5(num_classes, generator=generator, quant=quant)
    elif config.model == "two_layer":
        return TwoLayerNet(in_features, num_classes, config.units_per_class,
                           second_layer=config.second_layer, init_scale=config.init_scale,
                           generator=generator, quant=quant)
    else:
        model = MLP(in_features, config.hidden, num_classes, batchnorm=config.batchnorm,
                    generator=generator, quant=quant)
    return model if weights is None else quantize_weights(model, weights)
