"""SimCLR's networks (Chen, Kornblith, Norouzi & Hinton 2020): the encoder f and the projection head g of
`zoo.nn.resnet` (the official ResNet layout with width multipliers, the official projection head); NT-Xent is
`zoo.losses.nt_xent`.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.nn.resnet import Head, ProjectionHead, resnet_encoder

__all__ = ["Head", "ProjectionHead", "SimCLRNet", "resnet_encoder"]


class SimCLRNet(nn.Module):
    """f and g: images -> (h, z). Both views of a batch go through together, so batch norm sees all 2N images,
    as in the official code."""

    def __init__(self, depth: int = 18, width: float = 1.0, in_chans: int = 3, cifar_stem: bool = True,
                 head: Head = "nonlinear", head_layers: int = 2, out_features: int = 128, sk_ratio: float = 0.0):
        super().__init__()
        self.f = resnet_encoder(depth, width, in_chans, cifar_stem, sk_ratio)
        self.g = ProjectionHead(self.f.num_features, out_features, head_layers, head)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.f(x)
        return h, self.g(h)
