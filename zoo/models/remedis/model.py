"""REMEDIS' network (Azizi et al. 2023, "Robust and Efficient Medical Imaging with Self-Supervision"): one BiT
ResNet-v2 encoder f (`zoo.nn.bit`) carried through the recipe's three stages, with what each stage puts on top.

1. Supervised pre-training on natural images (BiT's upstream): f and a linear classifier, cross-entropy.
2. Intermediate contrastive learning on unlabelled in-domain images (SimCLR): f and SimCLR's projection head g
   (`zoo.nn.resnet.ProjectionHead`), NT-Xent on two views; f starts from stage 1.
3. Fine-tuning on the labelled task: f and a new linear classifier, cross-entropy; f starts from stage 2 (or, for
   the supervised baseline the paper compares with, from stage 1).

Only stage 2 builds g, so a release of any stage holds exactly the weights that stage trains. Images come in
[0, 1], as everywhere in the zoo, and f sees 2x - 1, the [-1, 1] range BiT was trained on (the official code's
`bit.py` rescales the same way).
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.nn.bit import bit_encoder
from zoo.nn.resnet import ProjectionHead

__all__ = ["REMEDISNet"]


class REMEDISNet(nn.Module):
    """images -> class scores classifier(f(x)); `project(x)` gives (h, z) = (f(x), g(f(x))) in the contrastive stage.

    Args:
        depth, width, in_chans, groups: the BiT encoder (`zoo.nn.bit.bit_encoder`; the paper's
            BiT-R50x1 and R152x2 are depth 50 / 152, width 1 / 2).
        num_classes: the classifier's classes.
        head_layers, out_features: g's layers and z's dimension; head_layers = 0 builds no g (stages 1 and 3).
    """

    def __init__(self, depth: int = 50, width: float = 1.0, in_chans: int = 3, groups: int = 32,
                 num_classes: int = 2, head_layers: int = 0, out_features: int = 128):
        super().__init__()
        self.f = bit_encoder(depth, width, in_chans, groups)
        self.g = ProjectionHead(self.f.num_features, out_features, head_layers) if head_layers else None
        self.classifier = nn.Linear(self.f.num_features, num_classes)
        nn.init.zeros_(self.classifier.weight)  # BiT starts its heads at zero
        nn.init.zeros_(self.classifier.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h = f(2x - 1) for images x in [0, 1]."""
        return self.f(2 * x - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.g is None:
            raise RuntimeError("this network has no projection head: build it with head_layers >= 2 (stage 2)")
        h = self.features(x)
        return h, self.g(h)
