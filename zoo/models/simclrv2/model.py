"""SimCLRv2's fine-tuned network (Chen et al. 2020b, §2 "Fine-tuning"; the official `ft_proj_selector`): the
encoder f, the first `selector` layers of the pre-trained projection head kept as part of the classifier, and a
linear supervised head on their output. selector = 0 is SimCLR v1's fine-tuning from f's output; the paper's
3-layer head is fine-tuned from its first layer (selector = 1). The same network is the distillation student.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.nn.resnet import ProjectionHead, resnet_encoder

__all__ = ["TunedNet"]


class TunedNet(nn.Module):
    """images -> class scores: classifier(g_{1..selector}(f(x))).

    Args:
        depth, width, in_chans, cifar_stem: the ResNet encoder (`zoo.nn.resnet.resnet_encoder`).
        head_layers, out_features: the pre-trained projection head's shape (kept layers must match it).
        selector: how many of its layers the classifier keeps (0 .. head_layers).
        num_classes: the supervised head's classes.
        zero_init: start the supervised head at zero (the official fine-tuning's `zero_init_logits_layer`);
            otherwise N(0, 0.01²) weights, as the official LinearLayer.
        sk_ratio: selective kernels in the encoder (the official "sk1" models: 0.0625).
    """

    def __init__(self, depth: int = 50, width: float = 1.0, in_chans: int = 3, cifar_stem: bool = False,
                 head_layers: int = 3, out_features: int = 128, selector: int = 1, num_classes: int = 1000,
                 zero_init: bool = True, sk_ratio: float = 0.0):
        super().__init__()
        if not 0 <= selector <= head_layers:
            raise ValueError(f"selector={selector}: the head has {head_layers} layers, choose 0..{head_layers}")
        self.f = resnet_encoder(depth, width, in_chans, cifar_stem, sk_ratio)
        self.g = ProjectionHead(self.f.num_features, out_features, head_layers, "nonlinear")
        if selector < head_layers:
            self.g.net = self.g.net[:3 * selector]  # each hidden layer is dense, batch norm, ReLU
        features = self.f.num_features if selector < head_layers else out_features
        self.classifier = nn.Linear(features, num_classes)
        nn.init.zeros_(self.classifier.bias)
        if zero_init:
            nn.init.zeros_(self.classifier.weight)
        else:
            nn.init.normal_(self.classifier.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.g(self.f(x)))
