"""Lightning glue for SimCLR: both views through the network in one pass, NT-Xent over the global batch, the
official linear probe trained beside it on detached features, LARS with the official exclusions and a warm-up then
cosine schedule, and linear evaluation of the frozen encoder in `analyse`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.losses import nt_xent
from zoo.metrics import linear_probe
from zoo.models.simclr.model import Head, SimCLRNet
from zoo.optim import check_scaled_optimizer, scaled_optimizer


@register_model("simclr")
class SimCLR(ZooClassifier):
    """SimCLR pre-training (arXiv 2002.05709, §2): two augmented views of each image (the DataModule draws them,
    `zoo.data.views`), encoder f and projection head g, NT-Xent at temperature τ.

    As the official code does, a linear classifier (`probe`) learns from the labels on the stop-gradient encoder
    features of both views at the same time; it gives `forward`'s class scores and the val/test accuracy while
    training, and never changes the encoder. `analyse` then runs the paper's linear evaluation on frozen features.

    `objective="supervised"` trains the same encoder and classifier end to end with cross-entropy on the first
    view instead: the supervised network of the same size that the paper sets linear evaluation against (§4.1), as
    the official code's fine-tuning from scratch does (its input pipeline then crops and flips without colour
    distortion: give the DataModule `color=False`).

    Args:
        in_chans, num_classes: image channels and the probe's classes.
        depth, width, cifar_stem: the ResNet encoder (model.py); the CIFAR stem for small images.
        sk_ratio: SimCLRv2's selective kernels (0.0625; 0 = plain ResNet; `zoo.nn.resnet`).
        head, head_layers, out_features: the projection head ("nonlinear" with `head_layers` layers, "linear",
            "none"; §4.2) and the dimension of z.
        temperature: τ of NT-Xent (the paper's CIFAR-10 setting: 0.5).
        objective: "contrastive" (SimCLR) or "supervised" (the baseline above; needs head="none").
        optimizer: "lars" (timm's LARS with momentum; batch norm, biases and the probe excluded from the trust-ratio
            adaptation, the official exclusions), "sgd" (momentum) or "adam".
        lr, lr_scaling: the base rate and how it scales with the global batch B (all ranks): "linear" lr·B/256
            (official default), "sqrt" lr·√B, "none".
        momentum, weight_decay: the official 0.9 and, on CIFAR-10, 1e-4 (ImageNet 1e-6).
        warmup_epochs: linear warm-up, then cosine decay to zero, per step.
        lars_rule: which tensors LARS adapts (`zoo.optim.scaled_optimizer`): "official", as google-research/simclr
            (every weight tensor but the supervised head's), or "decayed" (timm's rule: only where weight decay
            is set), which the catalogue's entries measured before 2026-12-05 used.
        weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    head_keys = ("probe.*",)

    def __init__(self, in_chans: int = 3, num_classes: int = 10, depth: int = 18, width: float = 1.0,
                 cifar_stem: bool = True, sk_ratio: float = 0.0, head: Head = "nonlinear", head_layers: int = 2, out_features: int = 128,
                 temperature: float = 0.5, objective: Literal["contrastive", "supervised"] = "contrastive",
                 optimizer: Literal["lars", "sgd", "adam"] = "lars", lr: float = 1.0,
                 lr_scaling: Literal["linear", "sqrt", "none"] = "linear", momentum: float = 0.9,
                 weight_decay: float = 1e-4, warmup_epochs: float = 10.0,
                 lars_rule: Literal["official", "decayed"] = "official", weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        check_scaled_optimizer(optimizer, lr_scaling)
        if objective not in ("contrastive", "supervised"):
            raise ValueError(f"objective={objective!r}: choose 'contrastive' or 'supervised'")
        if objective == "supervised" and head != "none":
            raise ValueError(f"objective='supervised' trains no projection head: set head='none' (got {head!r}), "
                             "or its unused weights would stall DDP")
        self.net = SimCLRNet(depth, width, in_chans, cifar_stem, head, head_layers, out_features, sk_ratio)
        self.probe = nn.Linear(self.net.f.num_features, num_classes)
        self.metrics = nn.ModuleDict({s: torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
                                      for s in ("val", "test")})
        self.init_weights_from(weights)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h = f(x), the representation the paper evaluates."""
        return self.net.f(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.features(x))

    def training_step(self, batch, batch_idx):
        (view_a, view_b), y = batch
        n = view_a.shape[0]
        if self.hparams.objective == "supervised":
            loss = F.cross_entropy(self(view_a), y)
            self.log("train/loss", loss, prog_bar=True, batch_size=n)
            return loss
        h, z = self.net(torch.cat([view_a, view_b]))
        contrastive = nt_xent(z[:n], z[n:], self.hparams.temperature)
        probe = F.cross_entropy(self.probe(h.detach()), y.repeat(2))
        self.log("train/nt_xent", contrastive, prog_bar=True, batch_size=n)
        self.log("train/probe_loss", probe, batch_size=n)
        return contrastive + probe

    def configure_optimizers(self):
        hp = self.hparams
        return scaled_optimizer(self, hp.optimizer, hp.lr, hp.lr_scaling, hp.momentum, hp.weight_decay,
                                hp.warmup_epochs, hp.lars_rule)

    # ---------------------------------------------------------------- the paper's measurement
    @torch.no_grad()
    def encode(self, dataset, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features h and labels of a dataset of plain images (eval mode: batch norm's running statistics)."""
        self.eval()
        hs, ys = [], []
        for start in range(0, len(dataset), batch):
            x, y = dataset.__getitems__(list(range(start, min(start + batch, len(dataset)))))
            hs.append(self.features(x.to(self.device)).float().cpu())
            ys.append(y)
        return torch.cat(hs), torch.cat(ys)

    def analyse(self, folder: Path | None, datamodule: Any = None) -> dict[str, Any]:
        """Linear evaluation (the paper's linear transfer protocol): L2-regularised logistic regression by L-BFGS on
        the frozen features of the training images, its weight decay chosen on the validation images, scored
        on the test images."""
        if datamodule is None or getattr(datamodule, "train_set", None) is None:
            return {}
        datamodule.setup("test")
        parts = [self.encode(getattr(datamodule, f"{s}_set")) for s in ("train", "val", "test")]
        out = linear_probe(*parts[0], *parts[1], *parts[2], num_classes=self.hparams.num_classes)
        table = ("| linear evaluation | accuracy |\n|---|---|\n"
                 f"| validation (chosen weight decay {out['l2']:g}) | {out['val_acc']:.4f} |\n"
                 f"| test | {out['test_acc']:.4f} |")
        return {"metrics": {"test/linear_acc": out["test_acc"], "val/linear_acc": out["val_acc"]},
                "tables": {"Linear evaluation of the frozen encoder": table}}
