"""The SimCLR family's networks (Chen et al. 2020, SimCLR and SimCLRv2): a ResNet encoder whose every width (stem
included) is scaled by the papers' multiplier, and the projection head on top of it.

The encoder is timm's ResNet with the official layout: timm's "deep" stem fixes the first stage's input width at
2 x stem_width, so stem_width = 32·w gives the official 64·w, and the stem itself is then replaced by one
convolution, the official 7x7 stride-2 (with max-pool) or the CIFAR variant's 3x3 stride 1 without max-pool
(SimCLR Appendix B.9). The last batch norm of every residual block starts at zero, as in the official ResNet.
The max-pool pads as TensorFlow's "SAME" does (timm's; the extra row and column at the bottom and right on even
sizes), not symmetrically as PyTorch's, so the official checkpoints compute here what they compute in TensorFlow.

`sk_ratio > 0` builds SimCLRv2's selective-kernel ResNets (the official `sk_conv2d`, Li et al. 2019) with their
ResNet-D parts: the deep stem of three 3x3 convolutions (32·w, 32·w, 64·w), and projection shortcuts that average-
pool before their 1x1 convolution, padded as the official code pads them (`OfficialAvgDown`).

The projection head is the official `projection_head`: `layers` dense layers of the encoder's width without bias,
each followed by batch norm and ReLU, the last one projecting to `out_features` with batch norm that scales but
does not shift (SimCLR: 2 layers; SimCLRv2: 3, fine-tuned from its first); "linear" is that last layer alone,
"none" the identity (SimCLR §4.2).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Head", "OfficialAvgDown", "ProjectionHead", "ScaleOnlyBatchNorm", "SelectiveKernelConv", "resnet_encoder"]

Head = Literal["nonlinear", "linear", "none"]


def resnet_encoder(depth: int = 18, width: float = 1.0, in_chans: int = 3, cifar_stem: bool = True,
                   sk_ratio: float = 0.0) -> nn.Module:
    """ResNet-`depth` (18, 34: basic blocks; 50, 101, 152: bottlenecks) with all widths x `width`, no classifier:
    images [B, C, H, W] -> h [B, num_features] after global average pooling. `sk_ratio` > 0 (SimCLRv2: 0.0625)
    makes every bottleneck's 3x3 convolution a selective kernel, with the ResNet-D stem and shortcuts."""
    from timm.layers import create_pool2d
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    layouts = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3]),
               101: (Bottleneck, [3, 4, 23, 3]), 152: (Bottleneck, [3, 8, 36, 3])}
    if depth not in layouts:
        raise ValueError(f"depth={depth}: choose one of {sorted(layouts)}")
    c = [int(round(64 * width * 2 ** i)) for i in range(4)]
    if min(c) < 1 or c[0] % 2:
        raise ValueError(f"width={width} gives stage widths {c}: the first must be a positive even number")
    block, layers = layouts[depth]
    if sk_ratio > 0 and (block is not Bottleneck or cifar_stem):
        raise ValueError("selective kernels (sk_ratio > 0) are built for the bottleneck ResNets (depth 50, 101, "
                         "152) with the ImageNet stem (cifar_stem: false), as the official SimCLRv2 models")
    net = ResNet(block, layers, num_classes=0, in_chans=in_chans, channels=tuple(c), stem_type="deep",
                 stem_width=c[0] // 2)
    if cifar_stem:
        net.conv1, net.maxpool = nn.Conv2d(in_chans, c[0], 3, 1, 1, bias=False), nn.Identity()
        return net
    net.maxpool = create_pool2d("max", 3, stride=2, padding="same")  # TF's "SAME": windows from the first pixel
    if sk_ratio <= 0:
        net.conv1 = nn.Conv2d(in_chans, c[0], 7, 2, 3, bias=False)
        return net
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for b in stage:
            planes = b.conv2.out_channels
            b.conv2 = SelectiveKernelConv(planes, planes, b.conv2.stride[0], sk_ratio)
            b.bn2, b.act2 = nn.Identity(), nn.Identity()
            if b.downsample is not None:
                conv = b.downsample[0]
                b.downsample = nn.Sequential(OfficialAvgDown(conv.stride[0]),
                                             nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=False),
                                             b.downsample[1])
    return net


class OfficialAvgDown(nn.Module):
    """The official ResNet-D shortcut's pooling before its 1x1 convolution: stride 2 pads one zero row and column
    at the bottom/right and averages 2x2 windows, zeros included; stride 1 averages 2x2 windows with TensorFlow's
    "SAME" padding, which leaves the padding out of the average."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (0, 1, 0, 1))
        if self.stride > 1:
            return F.avg_pool2d(padded, 2, self.stride)
        count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), (0, 1, 0, 1)), 2, 1)
        return F.avg_pool2d(padded, 2, 1) / count


class SelectiveKernelConv(nn.Module):
    """The official SimCLRv2 selective-kernel 3x3 convolution: one convolution to 2 x out channels (with batch norm
    and ReLU) split into two streams; their sum, pooled over space, goes through a 1x1 convolution to
    max(out·sk_ratio, 32) channels (batch norm, ReLU) and a 1x1 convolution to 2 x out channels, whose softmax over
    the two streams weighs them per channel."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, sk_ratio: float = 0.0625,
                 min_dim: int = 32):
        super().__init__()
        mid = max(int(out_channels * sk_ratio), min_dim)
        self.conv = nn.Conv2d(in_channels, 2 * out_channels, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * out_channels)
        self.fc1 = nn.Conv2d(out_channels, mid, 1, bias=False)
        self.bn_fc1 = nn.BatchNorm2d(mid)
        self.fc2 = nn.Conv2d(mid, 2 * out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        streams = torch.stack(F.relu(self.bn(self.conv(x))).chunk(2, dim=1))  # [2, B, C, H, W]
        pooled = streams.sum(0).mean((2, 3), keepdim=True)
        mixing = self.fc2(F.relu(self.bn_fc1(self.fc1(pooled))))
        weights = torch.stack(mixing.chunk(2, dim=1)).softmax(0)  # [2, B, C, 1, 1]
        return (streams * weights).sum(0)


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
