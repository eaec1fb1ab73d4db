"""Backprop baselines: a ReLU MLP and a small CNN, trained end to end with cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.data.augment import random_translate
from zoo.nn import MLP, ConvNet
from zoo.optim import with_cooldown


class CrossEntropyClassifier(ZooClassifier):
    """Backprop training on `loss(x, y)` (cross-entropy unless a subclass adds terms) and accuracy/loss
    evaluation; subclasses build `self.net` and call `_add_metrics(num_classes)`."""

    head_keys = ("net.head.*",)

    def _add_metrics(self, num_classes: int) -> None:
        self.metrics = nn.ModuleDict({s: torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
                                      for s in ("val", "test")})

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training objective on one batch."""
        return F.cross_entropy(self(x), y)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(x, y)
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss


@register_model("mlp")
class MLPClassifier(CrossEntropyClassifier):
    """The backprop network of a given shape: in_features -> hidden... -> num_classes, trained with SGD.

    `jitter` shifts each training image by up to that many pixels in each direction (0: off), as the
    distillation paper's MNIST teacher was trained; it needs image-shaped batches [B, C, H, W].
    """

    def __init__(self, in_features: int = 784, hidden: list[int] = [1000, 1000, 1000], num_classes: int = 10,
                 dropout: float = 0.0, lr: float = 1e-2, momentum: float = 0.9, weight_decay: float = 3e-4,
                 cooldown: bool = True, jitter: int = 0, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.net = MLP(in_features, list(hidden), num_classes, dropout)
        self._add_metrics(num_classes)
        self.init_weights_from(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(random_translate(x, self.hparams.jitter)), y)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        return with_cooldown(opt, self.planned_epochs, hp.cooldown)


@register_model("cnn")
class CNNClassifier(CrossEntropyClassifier):
    """A small CNN (zoo.nn.ConvNet) trained by backprop with cross-entropy, with SGD or Adam.

    Papers that change only the loss or the optimiser subclass it and override `loss` or
    `configure_optimizers`, so their baselines are this class with the same shape.

    Args:
        in_channels, image_size, channels, hidden, num_classes, dropout: the ConvNet's shape.
        optimizer: "sgd" (with `momentum`) or "adam".
        lr, momentum, weight_decay: the optimiser's settings.
        cooldown: linear learning-rate cooldown over the second half of training.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: list[int] = [32, 64],
                 hidden: list[int] = [256], num_classes: int = 10, dropout: float = 0.0,
                 optimizer: str = "sgd", lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
                 cooldown: bool = True, weights: str | None = None):
        super().__init__()
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.save_hyperparameters(ignore=["weights"])
        self.net = ConvNet(in_channels, image_size, list(channels), list(hidden), num_classes, dropout)
        self._add_metrics(num_classes)
        self.init_weights_from(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def base_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser the init args name, before any schedule (Lookahead wraps it)."""
        hp = self.hparams
        if hp.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    def configure_optimizers(self):
        return with_cooldown(self.base_optimizer(), self.planned_epochs, self.hparams.cooldown)
