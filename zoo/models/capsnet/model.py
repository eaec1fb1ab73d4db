"""The networks of the three class-conditional reconstruction papers, as plain nn.Modules.

- `CapsNet` (Sabour, Frosst & Hinton 2017): a ReLU convolution, primary capsules (a convolution grouped into
  8-D capsules, squashed) and one capsule per class reached by dynamic routing; the class score is the length
  of its capsule.
- `ConvEncoder`: the CNN the papers compare with, built like the CapsNet up to the primary capsules (the same
  two convolutions, the second with ReLU instead of squash), then one fully connected ReLU hidden layer of
  num_classes x class_dim units (the size of the class-capsule layer) and a linear layer to the logits. This
  is our reading of the papers' description; the exact CNN layer sizes were not in the text we could check.
- `ReconstructionDecoder`: the reconstruction network all three share: 512 and 1024 ReLU units, then one
  sigmoid per pixel.

What the decoder sees makes the difference between the models: CapsNet and CNN+CR give it only the group of
units of one class (its capsule, or its slice of the hidden layer; `zoo.nn.capsules.mask_capsules`), CNN+R the
whole hidden layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.capsules import PrimaryCapsules, RoutingCapsules


def _side(size: int, kernel: int, stride: int = 1) -> int:
    side = (size - kernel) // stride + 1
    if side < 1:
        raise ValueError(f"a {kernel}x{kernel} kernel with stride {stride} does not fit a {size}x{size} input")
    return side


class CapsNet(nn.Module):
    """conv (ReLU) -> primary capsules -> class capsules with dynamic routing. `forward` returns the class
    capsules v [B, num_classes, class_dim]; their lengths are the class scores."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, conv_channels: int = 256, kernel_size: int = 9,
                 primary_capsules: int = 32, primary_dim: int = 8, num_classes: int = 10, class_dim: int = 16,
                 routing_iterations: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, conv_channels, kernel_size)
        self.primary = PrimaryCapsules(conv_channels, primary_capsules, primary_dim, kernel_size, stride=2)
        side = _side(_side(image_size, kernel_size), kernel_size, 2)
        self.classes = RoutingCapsules(primary_capsules * side * side, primary_dim, num_classes, class_dim,
                                       routing_iterations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classes(self.primary(F.relu(self.conv(x))))[0]


class ConvEncoder(nn.Module):
    """The CNN baseline's classifier: the CapsNet's two convolutions (ReLU), a hidden layer of
    num_classes · class_dim ReLU units and the logits. `forward` returns (logits [B, K], hidden [B, K·D])."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, conv_channels: int = 256, kernel_size: int = 9,
                 conv2_channels: int = 256, num_classes: int = 10, class_dim: int = 16):
        super().__init__()
        side = _side(_side(image_size, kernel_size), kernel_size, 2)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, conv_channels, kernel_size), nn.ReLU(),
            nn.Conv2d(conv_channels, conv2_channels, kernel_size, stride=2), nn.ReLU(), nn.Flatten(),
            nn.Linear(conv2_channels * side * side, num_classes * class_dim), nn.ReLU(),
        )
        self.head = nn.Linear(num_classes * class_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.head(h), h


class ReconstructionDecoder(nn.Module):
    """in_features -> 512 -> 1024 (ReLU) -> C·H·W sigmoid units, reshaped to an image [B, C, H, W] in [0, 1]."""

    def __init__(self, in_features: int, image_shape: tuple[int, int, int], hidden: tuple[int, ...] = (512, 1024)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        layers, width = [], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers += [nn.Linear(width, self.image_shape[0] * self.image_shape[1] * self.image_shape[2]), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)


def sum_squared_error(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Σ over pixels of (x − r)², one value per example: the reconstruction loss of Sabour et al. (scaled by
    0.0005 there); its square root is the ℓ2 distance that DARCCC thresholds."""
    return (x - recon).pow(2).flatten(1).sum(1)
