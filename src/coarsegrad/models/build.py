"""Build the network a :class:`~coarsegrad.config.ModelConfig` names."""

from __future__ import annotations

import torch
from torch import nn

from coarsegrad.config import ModelConfig
from coarsegrad.models.networks import MLP, LeNet5, TwoLayerNet


def build_model(config: ModelConfig, in_features: int, num_classes: int, seed: int) -> nn.Module:
    """The network named by ``config``, initialised from ``seed`` (``act="float"``: quant
    None, plain ReLU)."""
    generator = torch.Generator().manual_seed(seed)
    quant = None if config.act == "float" else config.act_quant()
    if config.model == "lenet5":
        return LeNet5(num_classes, generator=generator, quant=quant)
    if config.model == "two_layer":
        return TwoLayerNet(in_features, num_classes, config.units_per_class,
                           second_layer=config.second_layer, init_scale=config.init_scale,
                           generator=generator, quant=quant)
    return MLP(in_features, config.hidden, num_classes, batchnorm=config.batchnorm,
               generator=generator, quant=quant)
