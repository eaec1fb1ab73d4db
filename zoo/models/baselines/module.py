"""A ReLU MLP trained end to end by backprop with cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.nn import MLP
from zoo.optim import with_cooldown


@register_model("mlp")
class MLPClassifier(ZooClassifier):
    """The backprop network of a given shape: in_features -> hidden... -> num_classes, trained with SGD."""

    head_keys = ("net.head.*",)

    def __init__(self, in_features: int = 784, hidden: list[int] = [1000, 1000, 1000], num_classes: int = 10,
                 dropout: float = 0.0, lr: float = 1e-2, momentum: float = 0.9, weight_decay: float = 3e-4,
                 cooldown: bool = True, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.net = MLP(in_features, list(hidden), num_classes, dropout)
        self.metrics = nn.ModuleDict({s: torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
                                      for s in ("val", "test")})
        self.init_weights_from(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def evaluate(self, batch, stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.metrics[stage](logits.argmax(1), y)
        self.log(f"{stage}/acc", self.metrics[stage], prog_bar=True)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        return with_cooldown(opt, self.planned_epochs, hp.cooldown)
