"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a student trained on the teacher's soft targets at
temperature T (scaled by T²) plus, with a small weight, the hard labels; inference at T = 1."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zoo._registry import register_model
from zoo.data.augment import random_translate
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
        omit_class: a class left out of the transfer set (§3's experiment that omits every 3): its examples
            are dropped from each training batch, so the student learns it only from the teacher's soft
            targets on other classes. `zoo reproduce` then measures the paper's bias correction.
        dropout, lr, momentum, weight_decay, cooldown, jitter: as for MLPClassifier (the paper's student: no
            dropout, no jitter; the teacher sees the same images as the student).
    """

    def __init__(self, in_features: int = 784, hidden: list[int] = [800, 800], num_classes: int = 10,
                 teacher: str = "kd-fmnist-teacher", temperature: float = 20.0, hard_weight: float = 0.1,
                 dropout: float = 0.0, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
                 cooldown: bool = True, jitter: int = 0, omit_class: int | None = None, weights: str | None = None):
        super().__init__(in_features, hidden, num_classes, dropout=dropout, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, cooldown=cooldown, jitter=jitter)
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
        if self.hparams.omit_class is not None:
            keep = y != self.hparams.omit_class
            if not keep.any():
                return None  # a batch of the omitted class only: nothing in the transfer set, skip the step
            x, y = x[keep], y[keep]
        x = random_translate(x, self.hparams.jitter)
        logits = self(x)
        soft = distillation_loss(logits, self.teacher_logits(x), self.hparams.temperature)
        hard = F.cross_entropy(logits, y)
        loss = soft + self.hparams.hard_weight * hard
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    # ---------------------------------------------------------------- the omitted-class experiment (§3)
    def analyse(self, folder: Path, datamodule=None) -> dict[str, Any]:
        """With `omit_class`: the omitted class's test accuracy, then the paper's fix, a constant added to
        that class's logit. The paper picked +3.5 on the test set; here the shift is chosen on the
        validation set (grid 0..10 in steps of 0.25) and only then applied to the test set."""
        c = self.hparams.omit_class
        if c is None or datamodule is None:
            return {}
        val, test = (self._logits_and_labels(datamodule, s) for s in ("val", "test"))
        shifts = torch.arange(0.0, 10.001, 0.25)
        offset = torch.zeros(self.hparams.num_classes)
        offset[c] = 1.0

        def accuracy(logits, y, shift):  # [S] accuracies for every shift at once
            pred = (logits[None] + shift[:, None, None] * offset).argmax(-1)
            return (pred == y).float().mean(-1), (pred[:, y == c] == c).float().mean(-1)

        val_acc, _ = accuracy(*val, shifts)
        best = shifts[int(val_acc.argmax())]
        before, before_c = accuracy(*test, torch.zeros(1))
        after, after_c = accuracy(*test, best[None])
        n_c = int((test[1] == c).sum())
        metrics = {"test/acc_omitted_class": float(before_c), "bias_shift": float(best),
                   "test/acc_bias_corrected": float(after), "test/acc_omitted_class_bias_corrected": float(after_c)}
        classes = list(getattr(datamodule, "classes", ())) or [str(i) for i in range(self.hparams.num_classes)]
        table = "\n".join([
            "| | test errors | errors on the omitted class | accuracy on the omitted class |",
            "|---|---|---|---|",
            f"| as trained | {round((1 - float(before)) * len(test[1]))} | {round((1 - float(before_c)) * n_c)} of {n_c} "
            f"| {float(before_c):.4f} |",
            f"| logit of '{classes[c]}' + {float(best):.2f} (chosen on validation) | {round((1 - float(after)) * len(test[1]))} "
            f"| {round((1 - float(after_c)) * n_c)} of {n_c} | {float(after_c):.4f} |",
        ])
        return {"metrics": metrics, "tables": {f"Transfer set without class {c} ({classes[c]})": table}}

    @torch.no_grad()
    def _logits_and_labels(self, datamodule, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        loader = getattr(datamodule, f"{stage}_dataloader")()
        self.eval()
        out = [(self(x.to(self.device)).float().cpu(), y) for x, y in loader]
        return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
