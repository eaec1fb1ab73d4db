"""A small convolutional classifier whose every layer's activity can be read out (for SNNL, CKA and
penultimate-layer pictures): conv blocks (conv, ReLU, 2x2 max-pool) then fully connected ReLU layers."""
from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    """`features(x)` returns the output of every hidden block (conv blocks, then dense layers); `head` maps
    the last one to `out_features`.

    Args:
        in_channels, image_size: input shape (1 and 28 for Fashion-MNIST).
        channels: output channels of each conv block (5x5 kernels, "same" padding, then a 2x2 max-pool).
        hidden: widths of the fully connected ReLU layers after the conv blocks.
        out_features: classes.
        dropout: dropout before each dense layer (0 disables it).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: list[int] = [32, 64],
                 hidden: list[int] = [256], out_features: int = 10, dropout: float = 0.0):
        super().__init__()
        convs, c, side = [], in_channels, image_size
        for out in channels:
            convs.append(nn.Sequential(nn.Conv2d(c, out, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)))
            c, side = out, side // 2
        dense, width = [], c * side * side
        for h in hidden:
            dense.append(nn.Sequential(nn.Flatten() if not dense else nn.Identity(), nn.Dropout(dropout),
                                       nn.Linear(width, h), nn.ReLU()))
            width = h
        self.blocks = nn.ModuleList([*convs, *dense])
        self.head = nn.Linear(width, out_features)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)[-1]
        return self.head(h.flatten(1))
