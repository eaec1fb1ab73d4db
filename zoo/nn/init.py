"""Initialisation conventions of other frameworks, for models whose official code is not PyTorch."""
from __future__ import annotations

from torch import nn


def keras_init_(module: nn.Module) -> nn.Module:
    """Keras' defaults, in place: Glorot-uniform kernels (fan average, the same fans as `xavier_uniform_` for
    convolutions) and zero biases for every Conv2d and Linear, scale 1 and shift 0 for every BatchNorm. Modules are
    visited in `module.modules()` order, so a seed gives the same weights every time."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
