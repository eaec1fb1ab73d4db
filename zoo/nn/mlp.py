"""A plain ReLU multilayer perceptron: the backprop baseline of the papers that compare with one."""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """`body`: in_features -> hidden[0] -> ... -> hidden[-1] with ReLUs; `head`: a linear layer to out_features."""

    def __init__(self, in_features: int, hidden: list[int], out_features: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        sizes = [in_features, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
