"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a student trained on the teacher's soft targets at
temperature T (scaled by T²) plus, with a small weight, the hard labels; inference at T = 1."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo._registry import register_model
from zoo.losses import distillation_loss
from zoo.models.baselines import MLPClassifier


@register_model("distilled_mlp")
class DistilledMLP(MLPClassifier):
    """A ReLU MLP student distilled from a zoo teacher.

    Args:
        in_features, hidden, num_classes: the student's shape (the paper's MNIST student: 784-800-800-10).
        teacher: the zoo checkpoint that provides soft targets (catalogue name, release folder or hf-hub:).
            It is loaded when training starts, kept frozen in eval mode, and is not part of the student's
            weights, so loading a distilled student for inference never needs the teacher.
        temperature: T of the softmax on both sides (the paper's MNIST value: 20).
        hard_weight: weight of the ordinary cross-entropy on the labels, next to the soft loss (weight 1).
        dropout, lr, momentum, weight_decay, cooldown: as for MLPClassifier (the paper's student: no dropout).
    """

    def __init__(self, in_features: int = 784, hidden: list[int] = [800, 800], num_classes: int = 10,
                 teacher: str = "kd-fmnist-teacher", temperature: float = 20.0, hard_weight: float = 0.1,
                 dropout: float = 0.0, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
                 cooldown: bool = True, weights: str | None = None):
        super().__init__(in_features, hidden, num_classes, dropout=dropout, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, cooldown=cooldown)
        self.save_hyperparameters(ignore=["weights"])
        self.__dict__["_teacher"] = None  # outside the module tree: not saved, not trained, not moved by Lightning
        self.init_weights_from(weights)

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self._teacher is None:
            import zoo

            self.__dict__["_teacher"] = zoo.load(self.hparams.teacher)
            for p in self._teacher.parameters():
                p.requires_grad_(False)
        with torch.no_grad():
            return self._teacher.to(x.device).eval()(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        soft = distillation_loss(logits, self.teacher_logits(x), self.hparams.temperature)
        hard = F.cross_entropy(logits, y)
        loss = soft + self.hparams.hard_weight * hard
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss
