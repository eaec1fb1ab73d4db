"""Lightning glue for Forward-Forward: local losses summed into one step (they share no gradient),
goodness-based and linear-classifier accuracy, and the figures shown in the model card."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.models.forward_forward.model import (FFNet, PeerNorm, ff_loss, goodness, length_normalise,
                                              overlay_label, overlay_neutral)
from zoo.optim import with_cooldown


@register_model("forward_forward")
class ForwardForward(ZooClassifier):
    """Supervised Forward-Forward (§3.3 of arXiv 2212.13345).

    Args:
        in_features: pixels per image; the first `num_classes` of them carry the label.
        hidden: units per hidden layer (the paper: 4 x 2000).
        num_classes: labels written into the image.
        threshold: θ in p = σ(G − θ); None means the number of units in the layer (the reference code).
        peer_norm: weight of the peer-normalisation loss (0 turns it off).
        relu_full_grad: pass gradients through the ReLU unchanged, as the Matlab code does.
        lr, momentum, weight_decay: SGD for the Forward-Forward layers.
        classifier_lr, classifier_weight_decay: SGD for the linear softmax on the activities.
        cooldown: keep the learning rate for half the epochs, then decay it linearly.
        seed: seeds the negative labels of each step (a function of seed, rank and step: exact resume).
        weights: a zoo checkpoint to start from (fine-tuning); not saved as a hyperparameter.
    """

    head_keys = ("classifier.*",)

    def __init__(self, in_features: int = 784, hidden: list[int] = [1000, 1000, 1000], num_classes: int = 10,
                 threshold: float | None = None, peer_norm: float = 0.03, peer_momentum: float = 0.9,
                 relu_full_grad: bool = True, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 3e-4,
                 classifier_lr: float = 1e-2, classifier_weight_decay: float = 3e-3, cooldown: bool = True,
                 seed: int = 0, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        if num_classes >= in_features:
            raise ValueError(f"num_classes={num_classes} label pixels do not fit in in_features={in_features}")
        self.net = FFNet(in_features, list(hidden), relu_full_grad)
        self.peer = nn.ModuleList(PeerNorm(n, peer_momentum) for n in hidden)
        read = hidden[1:] if len(hidden) > 1 else hidden
        self.classifier = nn.Linear(sum(read), num_classes)
        self.metrics = nn.ModuleDict({
            f"{stage}_{kind}": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
            for stage in ("val", "test") for kind in ("goodness", "linear")
        })
        self.init_weights_from(weights)

    # ---------------------------------------------------------------- the two test-time classifiers
    def _readout(self, hs: list[torch.Tensor]) -> torch.Tensor:
        used = hs[1:] if len(hs) > 1 else hs
        return torch.cat([length_normalise(h) for h in used], dim=1)

    def linear_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax logits of the linear classifier on neutral-label activities (one forward pass)."""
        x = x.flatten(1)
        return self.classifier(self._readout(self.net(overlay_neutral(x, self.hparams.num_classes))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Accumulated goodness per label [B, C]: the paper's test-time rule is its argmax."""
        return self.net.label_goodness(x.flatten(1), self.hparams.num_classes)

    # ---------------------------------------------------------------- training
    def _negative_labels(self, y: torch.Tensor) -> torch.Tensor:
        g = torch.Generator(device=y.device)
        g.manual_seed((self.hparams.seed * 1_000_003 + self.global_rank) * 1_000_003 + self.global_step)
        shift = torch.randint(1, self.hparams.num_classes, y.shape, generator=g, device=y.device)
        return (y + shift) % self.hparams.num_classes

    def local_losses(self, x: torch.Tensor, y: torch.Tensor, with_stats: bool = False
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The step's objective: every layer's goodness loss (+ peer normalisation) and the softmax read-out's
        cross-entropy, summed. They share no gradient (each layer's input is detached), so one backward
        pass gives each layer exactly the gradient of its own loss. `with_stats` adds per-layer diagnostics."""
        x, C = x.flatten(1), self.hparams.num_classes
        pos = overlay_label(x, y, C)
        neg = overlay_label(x, self._negative_labels(y), C)
        hs = self.net(torch.cat([pos, neg]))
        B = x.shape[0]
        loss, stats = x.new_zeros(()), {}
        for i, h in enumerate(hs):
            g = goodness(h)
            theta = self.hparams.threshold if self.hparams.threshold is not None else float(h.shape[1])
            layer_loss = ff_loss(g[:B], g[B:], theta)
            loss = loss + layer_loss
            if self.hparams.peer_norm > 0:
                loss = loss + self.hparams.peer_norm * self.peer[i](h[:B])
            if with_stats:
                stats[f"train/ff_loss_{i}"] = layer_loss.detach()
                stats[f"train/ff_sep_{i}"] = torch.cat([g[:B] > theta, g[B:] <= theta]).float().mean()
        with torch.no_grad():
            feats = self._readout(self.net(overlay_neutral(x, C)))
        ce = F.cross_entropy(self.classifier(feats), y)
        if with_stats:
            stats["train/ce"] = ce.detach()
        return loss + ce, stats

    def training_step(self, batch, batch_idx):
        # per-layer diagnostics only on logging steps: each self.log call costs about 1% of a step here
        detail = self.global_step % self.trainer.log_every_n_steps == 0
        total, stats = self.local_losses(*batch, with_stats=detail)
        self.log("train/loss", total.detach(), prog_bar=True)
        if detail:
            self.log_dict(stats)
        return total

    def evaluate(self, batch, stage: str) -> None:
        x, y = batch
        self.metrics[f"{stage}_goodness"](self(x).argmax(1), y)
        self.metrics[f"{stage}_linear"](self.linear_logits(x).argmax(1), y)
        self.log(f"{stage}/acc", self.metrics[f"{stage}_goodness"], prog_bar=True)
        self.log(f"{stage}/acc_linear", self.metrics[f"{stage}_linear"], prog_bar=stage == "val")

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD([
            {"params": [*self.net.parameters()], "lr": hp.lr, "weight_decay": hp.weight_decay},
            {"params": [*self.classifier.parameters()], "lr": hp.classifier_lr,
             "weight_decay": hp.classifier_weight_decay},
        ], momentum=hp.momentum)
        return with_cooldown(opt, self.planned_epochs, hp.cooldown)

    # ---------------------------------------------------------------- pictures for the model card
    def release_figures(self, folder: Path, datamodule=None) -> dict[str, Path]:
        """PNGs for the model card: first-layer receptive fields (the label pixels included) and, given the
        DataModule, the accumulated goodness of every label for a dozen test images."""
        from zoo._plots import score_table, weight_grid

        figures = {}
        w = self.net.layers[0].weight.detach().cpu()
        side = int(round(w.shape[1] ** 0.5))
        if side * side == w.shape[1]:
            path = weight_grid(w[:64].view(-1, side, side), folder / "receptive_fields.png",
                               title="Forward-Forward: first-layer weights of 64 units (label pixels top left)")
            figures[path.name] = path
        if datamodule is not None and getattr(datamodule, "test_set", None) is not None:
            x, y = datamodule.test_set.__getitems__(list(range(12)))
            with torch.no_grad():
                scores = self.eval()(x.to(self.device)).cpu()
            classes = list(getattr(datamodule, "classes", ())) or [str(i) for i in range(scores.shape[1])]
            path = score_table(x[:, 0], scores, y, classes, folder / "goodness_by_label.png",
                               title="Accumulated goodness per label (red: true label, dot: prediction)")
            figures[path.name] = path
        return figures
