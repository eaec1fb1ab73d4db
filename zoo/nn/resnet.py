"""The SimCLR family's networks (Chen et al. 2020, SimCLR and SimCLRv2): a ResNet encoder whose every width (stem
included) is scaled by the papers' multiplier, and the projection head on top of it.

The encoder is timm's ResNet with the official layout: timm's "deep" stem fixes the first stage's input width at
2 x stem_width, so stem_width = 32·w gives the official 64·w, and the stem itself is then replaced by one
convolution, the official 7x7 stride-2 (with max-pool) or the CIFAR variant's 3x3 stride 1 without max-pool
(SimCLR Appendix B.9). The last batch norm of every residual block starts at zero, as in the official ResNet.

The projection head is the official `projection_head`: `layers` dense layers of the encoder's width without bias,
each followed by batch norm and ReLU, the last one projecting to `out_features` with batch norm that scales but
does not shift (SimCLR: 2 layers; SimCLRv2: 3, fine-tuned from its first); "linear" is that last layer alone,
"none" the identity (SimCLR §4.2).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["Head", "ProjectionHead", "ScaleOnlyBatchNorm", "resnet_encoder"]

Head = Literal["nonlinear", "linear", "none"]


def resnet_encoder(depth: int = 18, width: float = 1.0, in_chans: int = 3, cifar_stem: bool = True) -> nn.Module:
    """ResNet-`depth` (18, 34: basic blocks; 50, 101, 152: bottlenecks) with all widths x `width`, no classifier:
    images [B, C, H, W] -> h [B, num_features] after global average pooling."""
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    layouts = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3]),
               101: (Bottleneck, [3, 4, 23, 3]), 152: (Bottleneck, [3, 8, 36, 3])}
    if depth not in layouts:
        raise ValueError(f"depth={depth}: choose one of {sorted(layouts)}")
    c = [int(round(64 * width * 2 ** i)) for i in range(4)]
    if min(c) < 1 or c[0] % 2:
        raise ValueError(f"width={width} gives stage widths {c}: the first must be a positive even number")
    block, layers = layouts[depth]
    net = ResNet(block, layers, num_classes=0, in_chans=in_chans, channels=tuple(c), stem_type="deep",
                 stem_width=c[0] // 2)
    if cifar_stem:
        net.conv1, net.maxpool = nn.Conv2d(in_chans, c[0], 3, 1, 1, bias=False), nn.Identity()
    else:
        net.conv1 = nn.Conv2d(in_chans, c[0], 7, 2, 3, bias=False)
    return net


class ScaleOnlyBatchNorm(nn.BatchNorm1d):
    """Batch norm with a learned scale and no shift (the official head's last layer: `center=False`)."""

    def __init__(self, features: int):
        super().__init__(features, affine=False)
        self.weight_scale = nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.weight_scale


class ProjectionHead(nn.Module):
    """g: h [B, in_features] -> z [B, out_features] (module docstring)."""

    def __init__(self, in_features: int, out_features: int = 128, layers: int = 2, kind: Head = "nonlinear"):
        super().__init__()
        if kind not in ("nonlinear", "linear", "none"):
            raise ValueError(f"kind={kind!r}: choose 'nonlinear', 'linear' or 'none'")
        if kind == "nonlinear" and layers < 2:
            raise ValueError("a nonlinear head needs layers >= 2 (one hidden layer and the output layer)")
        parts: list[nn.Module] = []
        if kind == "nonlinear":
            for _ in range(layers - 1):
                parts += [nn.Linear(in_features, in_features, bias=False), nn.BatchNorm1d(in_features), nn.ReLU()]
        if kind != "none":
            parts += [nn.Linear(in_features, out_features, bias=False), ScaleOnlyBatchNorm(out_features)]
        self.net = nn.Sequential(*parts)
        self.out_features = out_features if kind != "none" else in_features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)
