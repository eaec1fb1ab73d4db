"""Lightning glue for SimCLRv2's second and third stages (arXiv 2006.10029, §2): supervised fine-tuning of a
pre-trained SimCLR network on a fraction of the labels, then distillation of the fine-tuned network into a student
on the unlabelled training images."""
from __future__ import annotations

from fnmatch import fnmatch
from typing import Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.losses import distillation_loss
from zoo.models.simclrv2.model import TunedNet
from zoo.optim import check_scaled_optimizer, scaled_optimizer

Optimizer = Literal["lars", "sgd", "adam"]
Scaling = Literal["linear", "sqrt", "none"]


class _Tuned(ZooClassifier):
    """A TunedNet classifier with the SimCLR family's optimiser; subclasses define the training loss."""

    head_keys = ("net.classifier.*",)

    def _build(self, num_classes: int, depth: int, width: float, in_chans: int, cifar_stem: bool, head_layers: int,
               out_features: int, ft_proj_selector: int, zero_init: bool, sk_ratio: float) -> None:
        check_scaled_optimizer(self.hparams.optimizer, self.hparams.lr_scaling)
        self.net = TunedNet(depth, width, in_chans, cifar_stem, head_layers, out_features, ft_proj_selector,
                            num_classes, zero_init, sk_ratio)
        self.metrics = nn.ModuleDict({s: torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
                                      for s in ("val", "test")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self):
        hp = self.hparams
        return scaled_optimizer(self, hp.optimizer, hp.lr, hp.lr_scaling, hp.momentum, hp.weight_decay,
                                hp.warmup_epochs, hp.lars_rule)


@register_model("simclrv2_finetune")
class SimCLRv2FineTune(_Tuned):
    """Fine-tuning from the projection head's middle (SimCLRv2 §2): f and the first `ft_proj_selector` layers of
    a SimCLR network pre-trained with a deep head, and a new linear head, all trained with cross-entropy on the
    labelled images (a class-balanced fraction: `TwoViewIDXDataModule(label_fraction=...)`; the first view of
    each pair, cropped and flipped without colour distortion, as the official fine-tuning's input).

    The official 1%-label ImageNet recipe: LARS, base rate 0.005 with square-root scaling (0.16 at batch 1024), no
    weight decay, no warm-up, 60 epochs (30 for 10%), the supervised head zero-initialised, global batch norm.

    Args:
        pretrained: the zoo SimCLR checkpoint (catalogue name, release folder or hf-hub:) whose encoder and first
            head layers start the network, copied when training sets up (so a recipe builds before its
            pre-training exists); every kept weight must be in it with the same shape, and what is not kept
            (deeper head layers, the linear probe) is skipped by name. Not saved as a hyperparameter: a release
            holds the fine-tuned weights themselves.
        ft_proj_selector: head layers kept (the paper: 1 of 3; 0 is v1's fine-tuning from h).
        depth, width, in_chans, cifar_stem, sk_ratio, head_layers, out_features: the pre-trained network's shape.
        optimizer, lr, lr_scaling, momentum, weight_decay, warmup_epochs: `zoo.optim.scaled_optimizer`.
        lars_rule: which tensors LARS adapts (`zoo.optim.scaled_optimizer`): "official", as google-research/simclr
            (every weight tensor but the supervised head's), or "decayed" (timm's rule: only where weight decay
            is set), which the catalogue's entries measured before 2026-12-05 used.
        weights: a zoo checkpoint of this model to start from (`zoo fit` fine-tuning of a release).
    """

    def __init__(self, num_classes: int = 10, depth: int = 50, width: float = 1.0, in_chans: int = 3,
                 cifar_stem: bool = False, sk_ratio: float = 0.0, head_layers: int = 3, out_features: int = 128,
                 ft_proj_selector: int = 1, optimizer: Optimizer = "lars", lr: float = 0.005,
                 lr_scaling: Scaling = "sqrt",
                 momentum: float = 0.9, weight_decay: float = 0.0, warmup_epochs: float = 0.0,
                 lars_rule: Literal["official", "decayed"] = "official", pretrained: str | None = None,
                 weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["pretrained", "weights"])
        self._build(num_classes, depth, width, in_chans, cifar_stem, head_layers, out_features, ft_proj_selector,
                    zero_init=True, sk_ratio=sk_ratio)
        self.defer_pretrained(pretrained, weights, "a SimCLR pre-training to fine-tune")
        self.init_weights_from(weights)

    def setup(self, stage: str) -> None:
        if source := self.take_pretrained():
            self.load_pretrained(source)

    def load_pretrained(self, source: str) -> None:
        """Copy f and the kept head layers from a SimCLR checkpoint (its keys net.f.*, net.g.net.*); the
        supervised head keeps its initialisation. A missing or mis-shaped weight is an error naming it."""
        from zoo._hub import load_state_strict, resolve

        src = resolve(source)
        kept = {k for k in self.state_dict() if not fnmatch(k, "net.classifier.*")}
        state = {k: v for k, v in src.state.items() if k in kept}
        if not any(k.startswith("net.f.") for k in state):
            raise ValueError(f"{source}: no SimCLR encoder weights (net.f.*) in it; pre-train with "
                             "`zoo fit --config configs/simclrv2/...pretrain...` or give a SimCLR release")
        load_state_strict(self, state, drop=("net.classifier.*",))

    def training_step(self, batch, batch_idx):
        (view, _), y = batch
        loss = F.cross_entropy(self(view), y)
        self.log("train/loss", loss, prog_bar=True, batch_size=view.shape[0])
        return loss


@register_model("simclrv2_distill")
class SimCLRv2Distill(_Tuned):
    """Distillation on unlabelled images (SimCLRv2 §2, eq. 2): a student, trained from scratch, minimises the
    cross-entropy between the fixed teacher's softmax(logits/τ) and its own on the same crop of each training
    image, labels unused: `zoo.losses.distillation_loss` (scaled by τ², as the official code's `add_kd_loss`).
    The teacher is a zoo classifier (the fine-tuned network); the student is the same architecture
    (self-distillation) or a smaller one (big-to-small), with the head's first layer kept as in fine-tuning.

    Args:
        teacher: the zoo checkpoint giving soft labels; loaded when training starts, kept out of the module (not
            saved, not trained, not moved by Lightning), so a distilled release never needs it.
        temperature: τ (the paper's 1).
        the rest: as `SimCLRv2FineTune` (the student's shape and optimiser).
    """

    def __init__(self, num_classes: int = 10, depth: int = 50, width: float = 1.0, in_chans: int = 3,
                 cifar_stem: bool = False, sk_ratio: float = 0.0, head_layers: int = 3, out_features: int = 128,
                 ft_proj_selector: int = 1, teacher: str = "simclrv2-fmnist-finetune-1pct",
                 temperature: float = 1.0,
                 optimizer: Optimizer = "lars", lr: float = 1.0, lr_scaling: Scaling = "linear",
                 momentum: float = 0.9, weight_decay: float = 1e-4, warmup_epochs: float = 0.0,
                 lars_rule: Literal["official", "decayed"] = "official", weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self._build(num_classes, depth, width, in_chans, cifar_stem, head_layers, out_features, ft_proj_selector,
                    zero_init=False, sk_ratio=sk_ratio)
        self.__dict__["_teacher"] = None
        self.init_weights_from(weights)

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self._teacher is None:
            import zoo

            teacher = zoo.load(self.hparams.teacher)
            for p in teacher.parameters():
                p.requires_grad_(False)
            self.__dict__["_teacher"] = teacher
        return self._teacher.to(x.device).eval()(x)

    def training_step(self, batch, batch_idx):
        (view, _), _labels = batch  # the labels are not used: the teacher labels every image
        loss = distillation_loss(self(view), self.teacher_logits(view), self.hparams.temperature)
        self.log("train/distill_loss", loss, prog_bar=True, batch_size=view.shape[0])
        return loss
