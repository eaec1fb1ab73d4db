"""Lightning glue for the class-conditional reconstruction models: CapsNet ("capsnet"), CNN+R ("cnn_r") and
CNN+CR ("cnn_cr"), as compared by DARCCC (Frosst, Sabour & Hinton 2018), "Detecting and Diagnosing Adversarial
Images" (Qin et al. 2020) and "Deflecting Adversarial Attacks" (Qin et al. 2020).

Every module trains on its classification loss plus 0.0005 x the summed squared reconstruction error, the
decoder seeing the true class's group at training and the predicted class's at test, and offers the interface
the attacks and detectors of `zoo.adversarial` use: `scores_and_reconstruction`, `class_loss` and the
`detection_threshold` buffer (DARCCC's threshold, set by `analyse` and saved with the weights).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.adversarial import cw_margin
from zoo.data.augment import random_translate
from zoo.models.capsnet.model import CapsNet, ConvEncoder, ReconstructionDecoder, sum_squared_error
from zoo.nn.capsules import margin_loss, mask_capsules


class ReconstructionClassifier(ZooClassifier):
    """A classifier with a reconstruction decoder: training, evaluation, optimiser and the detection analysis.

    Subclasses build the classifier, call `_build_shared(decoder_in)` and implement `forward` (class scores),
    `scores_and_reconstruction`, `class_loss` (what an attacker minimises) and `training_class_loss`.
    """

    def _build_shared(self, decoder_in: int) -> None:
        hp = self.hparams
        self.decoder = ReconstructionDecoder(decoder_in, (hp.in_channels, hp.image_size, hp.image_size))
        # DARCCC's threshold on ‖x − r(x)‖₂ (95th percentile on validation); NaN until `analyse` sets it
        self.register_buffer("detection_threshold", torch.tensor(float("nan")))
        self.metrics = nn.ModuleDict({s: torchmetrics.Accuracy(task="multiclass", num_classes=hp.num_classes)
                                      for s in ("val", "test")})

    # ------------------------------------------------------------------ the interface zoo.adversarial uses
    def scores_and_reconstruction(self, x: torch.Tensor, y: torch.Tensor | None = None
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(class scores [B, K], reconstruction [B, C, H, W] in [0, 1]), differentiable w.r.t. x; the
        reconstruction is conditioned on class `y` when given, else on the predicted class."""
        raise NotImplementedError

    attack_losses: ClassVar[tuple[str, ...]] = ("cross_entropy", "cw")

    def _check_attack_loss(self, attack_loss: str) -> None:
        if attack_loss not in self.attack_losses:
            raise ValueError(f"attack_loss must be one of {self.attack_losses}, got {attack_loss!r}")

    def class_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The per-example loss [B] an attacker raises (untargeted) or lowers (targeted), and the cycle-consistency
        detector's score: `attack_loss` "cw" is Carlini & Wagner's margin on the class scores (the same function
        of lengths or logits, so attacks on different models are alike), "cross_entropy" the cross-entropy."""
        if self.hparams.attack_loss == "cw":
            return cw_margin(scores, y)
        return F.cross_entropy(scores, y, reduction="none")

    def training_class_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The per-example classification part of the training objective."""
        return F.cross_entropy(scores, y, reduction="none")

    # ------------------------------------------------------------------ training and evaluation
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, classification, reconstruction) on one batch: the decoder sees the true class."""
        scores, recon = self.scores_and_reconstruction(x, y)
        cls = self.training_class_loss(scores, y).mean()
        rec = sum_squared_error(x, recon).mean()
        return cls + self.hparams.recon_weight * rec, cls, rec

    def training_step(self, batch, batch_idx):
        x, y = batch
        total, cls, rec = self.loss(random_translate(x, self.hparams.jitter), y)
        self.log("train/loss", total.detach(), prog_bar=True)
        self.log_dict({"train/class_loss": cls.detach(), "train/recon_sse": rec.detach()})
        return total

    def evaluate(self, batch, stage: str) -> None:
        x, y = batch
        scores, recon = self.scores_and_reconstruction(x)  # the winning class, as a detector sees it
        self.metrics[stage](scores.argmax(1), y)
        self.log(f"{stage}/acc", self.metrics[stage], prog_bar=True)
        self.log(f"{stage}/loss", self.training_class_loss(scores, y).mean(), sync_dist=True)
        self.log(f"{stage}/recon_l2", sum_squared_error(x, recon).sqrt().mean(), sync_dist=True)

    def configure_optimizers(self):
        """Adam with the learning rate multiplied by `lr_decay` every epoch, or, given `lr_decay_steps`, decayed
        continuously by `lr_decay` per that many steps (the official capsules code: 0.96 per 2,000 steps of
        batches of 128, floored at 1e-6)."""
        hp = self.hparams
        opt = torch.optim.Adam(self.parameters(), lr=hp.lr)
        every = hp.get("lr_decay_steps")  # the CNN baselines sharing this optimiser have no such argument
        if every is None:
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=hp.lr_decay)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(hp.lr_decay ** (step / every), 1e-6 / hp.lr))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ the papers' experiments
    def analyse(self, folder: Path, datamodule: Any = None) -> dict[str, Any]:
        """DARCCC's threshold (stored in `detection_threshold`), the white-box attacks and the detection,
        undetected-success and deflection rates, by `zoo.adversarial.detection_report`."""
        if datamodule is None:
            return {}
        from zoo.adversarial import detection_report

        return detection_report(self, datamodule, folder, judge=self.hparams.judge,
                                num_examples=self.hparams.num_attack_examples)


@register_model("capsnet")
class CapsNetClassifier(ReconstructionClassifier):
    """CapsNet with dynamic routing (Sabour, Frosst & Hinton 2017) and its class-conditional reconstruction
    decoder, the model DARCCC and its two follow-ups defend with.

    Args:
        in_channels, image_size: the input images (1 x 28 x 28 for (Fashion-)MNIST, 3 x 32 x 32 for SVHN/CIFAR).
        conv_channels, kernel_size: the first ReLU convolution (paper: 256 channels, 9 x 9).
        primary_capsules, primary_dim: capsule types of the primary layer and their size (paper: 32 of 8-D,
            from a 9 x 9 convolution with stride 2).
        num_classes, class_dim, routing_iterations: class capsules (paper: 10 of 16-D) and routing passes (3).
        recon_weight: weight of the summed squared reconstruction error (paper: 0.0005). The margin loss is the
            paper's Eq. 4, summed over the classes; the official code halves both of its terms and averages them
            over the classes, so there the same 0.0005 weighs the reconstruction 20 times more (0.01 here).
        attack_loss: what `class_loss` gives attackers and the cycle-consistency detector: "cw", Carlini &
            Wagner's margin on the capsule lengths (the longest other capsule minus the class's; the CNNs use it
            on their logits); "cross_entropy" on the lengths used as logits (bounded between about 1.5 and 2.3,
            not comparable with a CNN's); or the training "margin" loss (Eq. 4). The papers' text we could read
            does not say which they used.
        lr, lr_decay, lr_decay_steps: Adam's learning rate and its decay factor, applied every epoch (None) or
            continuously per `lr_decay_steps` steps (the official code: 0.96 per 2,000).
        jitter: random shift of every training image by up to this many pixels (paper, MNIST: 2).
        judge: catalogue name (or release folder) of a separately trained clean classifier that `analyse`
            asks whether an undetected attack looks like its target class (Deflecting's measure); None: skip.
        num_attack_examples: test images `analyse` attacks.
    """

    head_keys = ("capsnet.classes.*", "decoder.net.0.*")
    attack_losses = ("cw", "cross_entropy", "margin")

    def __init__(self, in_channels: int = 1, image_size: int = 28, conv_channels: int = 256, kernel_size: int = 9,
                 primary_capsules: int = 32, primary_dim: int = 8, num_classes: int = 10, class_dim: int = 16,
                 routing_iterations: int = 3, recon_weight: float = 0.0005,
                 attack_loss: Literal["cw", "cross_entropy", "margin"] = "cw", lr: float = 1e-3,
                 lr_decay: float = 0.96, lr_decay_steps: int | None = None, jitter: int = 0,
                 judge: str | None = "kd-fmnist-teacher", num_attack_examples: int = 1000, weights: str | None = None):
        super().__init__()
        self._check_attack_loss(attack_loss)
        self.save_hyperparameters(ignore=["weights"])
        self.capsnet = CapsNet(in_channels, image_size, conv_channels, kernel_size, primary_capsules, primary_dim,
                               num_classes, class_dim, routing_iterations)
        self._build_shared(num_classes * class_dim)
        self.init_weights_from(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.capsnet(x).norm(dim=-1)

    def scores_and_reconstruction(self, x, y=None):
        v = self.capsnet(x)
        lengths = v.norm(dim=-1)
        return lengths, self.decoder(mask_capsules(v, y if y is not None else lengths.argmax(1)))

    def class_loss(self, scores, y):
        if self.hparams.attack_loss == "margin":
            return self.training_class_loss(scores, y)
        return super().class_loss(scores, y)

    def training_class_loss(self, scores, y):
        """Eq. 4, the margin loss, on the capsule lengths (a length-1 vector per class is its own length)."""
        return margin_loss(scores.unsqueeze(-1), y, reduction="none")


class _ConvReconstruction(ReconstructionClassifier):
    """The CNN baselines: `ConvEncoder` (the CapsNet's convolutions, a hidden layer of num_classes x class_dim
    ReLUs, logits), cross-entropy, and the decoder fed from the hidden layer (all of it, or one class's slice)."""

    class_conditional: ClassVar[bool]
    head_keys = ("encoder.features.5.*", "encoder.head.*", "decoder.net.0.*")

    def __init__(self, in_channels: int = 1, image_size: int = 28, conv_channels: int = 256, kernel_size: int = 9,
                 conv2_channels: int = 256, num_classes: int = 10, class_dim: int = 16, recon_weight: float = 0.0005,
                 attack_loss: Literal["cw", "cross_entropy"] = "cw", lr: float = 1e-3, lr_decay: float = 0.96,
                 jitter: int = 0, judge: str | None = "kd-fmnist-teacher", num_attack_examples: int = 1000,
                 weights: str | None = None):
        super().__init__()
        self._check_attack_loss(attack_loss)
        self.save_hyperparameters(ignore=["weights"])
        self.encoder = ConvEncoder(in_channels, image_size, conv_channels, kernel_size, conv2_channels, num_classes,
                                   class_dim)
        self._build_shared(num_classes * class_dim)
        self.init_weights_from(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[0]

    def scores_and_reconstruction(self, x, y=None):
        logits, h = self.encoder(x)
        if self.class_conditional:
            groups = h.view(len(h), self.hparams.num_classes, self.hparams.class_dim)
            h = mask_capsules(groups, y if y is not None else logits.argmax(1))
        return logits, self.decoder(h)


@register_model("cnn_r")
class CNNR(_ConvReconstruction):
    """CNN+R: the CNN baseline reconstructing from its whole last hidden layer (the class is ignored).

    Args: as for `cnn_cr`.
    """

    class_conditional = False


@register_model("cnn_cr")
class CNNCR(_ConvReconstruction):
    """CNN+CR: the CNN baseline with class-conditional reconstruction. Its last hidden layer is split into
    num_classes groups of class_dim units; the decoder sees only the group of the true class (training) or the
    predicted class (test), every other unit zeroed, as a CapsNet's decoder sees one class capsule.

    Args:
        in_channels, image_size, num_classes: the data.
        conv_channels, kernel_size, conv2_channels: the two ReLU convolutions (9 x 9, the second with stride 2),
            sized like the CapsNet's first convolution and primary-capsule convolution (256 and 32 x 8).
        class_dim: units per class in the last hidden layer (num_classes x class_dim units, as many as the
            CapsNet's class capsules).
        attack_loss: "cw" (Carlini & Wagner's margin on the logits, as on the CapsNet's lengths) or "cross_entropy".
        recon_weight, lr, lr_decay, jitter, judge, num_attack_examples: as for `capsnet`.
    """

    class_conditional = True
