"""Lightning glue for REMEDIS' three stages (model.py): one module, `stage` choosing the objective, `pretrained`
carrying the encoder from one stage's release to the next."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.losses import nt_xent
from zoo.models.remedis.model import REMEDISNet
from zoo.optim import check_scaled_optimizer, scaled_optimizer

Stage = Literal["supervised", "contrastive", "finetune"]


@register_model("remedis")
class REMEDIS(ZooClassifier):
    """One stage of the REMEDIS recipe (arXiv 2205.09723): "supervised" pre-training on natural images, then
    "contrastive" learning (SimCLR's NT-Xent on two views drawn by `zoo.data.views`) on unlabelled in-domain images,
    then "finetune" on the labelled task. Each stage is its own `zoo fit` run and release; `pretrained` names the
    release whose encoder f starts the next one (the stage-1 release for stage 2; the stage-2 release, or for
    the supervised baseline the stage-1 one, for stage 3).

    The paper's released checkpoints are credentialed on PhysioNet and are never mirrored or converted here; the
    recipes start from BiT's public upstream (`zoo convert bit-m-r50x1`).

    In the contrastive stage the classifier is trained beside it on detached features wherever labels exist
    (the official SimCLR code's linear evaluation while pre-training; labels of -1, unlabelled images, are
    skipped), so validation accuracy is watched without the labels ever reaching f.

    Args:
        stage: "supervised", "contrastive" or "finetune".
        num_classes, in_chans: the classifier's classes and the images' channels.
        depth, width, groups: the BiT encoder (`zoo.nn.bit`; the paper: R50x1 and R152x2).
        head_layers, out_features, temperature: SimCLR's projection head and τ, used in the contrastive stage.
        optimizer, lr, lr_scaling, momentum, weight_decay, warmup_epochs: `zoo.optim.scaled_optimizer` (warm-up,
            then cosine decay per step; LARS with the official exclusions for the contrastive stage).
        lars_rule: which tensors LARS adapts (`zoo.optim.scaled_optimizer`): "official", as google-research/simclr
            (every weight tensor but the supervised head's), or "decayed" (timm's rule: only where weight decay
            is set), which the catalogue's entries measured before 2026-12-05 used.
        pretrained: a REMEDIS release (catalogue name, folder or hf-hub:) whose f is copied when training sets up;
            the stage's own heads keep their initialisation. Not saved: a release holds its trained weights.
        multilabel: the targets are one 0/1 per class (CheXpert's observations) instead of one class: a sigmoid
            cross-entropy per class, scored by the mean of the per-class ROC AUCs (val/auc, test/auc), as CheXpert
            results are reported.
        linear_eval: fine-tuning only: keep f frozen and train the linear classifier alone (SimCLR's linear
            evaluation protocol, which measures what the contrastive stage learned without changing it).
        ood_data: a DataModule of the same task from a shifted source, as plain data ({"class_path": ...,
            "init_args": {...}}); `analyse` (run by `zoo reproduce`) scores the trained network on its test split
            unchanged, the paper's zero-shot out-of-distribution evaluation, as test/ood_acc.
        weights: a release of this same stage and shape to go on from.
    """

    head_keys = ("net.classifier.*",)

    def __init__(self, stage: Stage = "finetune", num_classes: int = 2, in_chans: int = 3, depth: int = 50,
                 width: float = 1.0, groups: int = 32, head_layers: int = 2,
                 out_features: int = 128, temperature: float = 0.1,
                 optimizer: Literal["lars", "sgd", "adam"] = "sgd", lr: float = 0.003,
                 lr_scaling: Literal["linear", "sqrt", "none"] = "none", momentum: float = 0.9,
                 weight_decay: float = 0.0, warmup_epochs: float = 0.0,
                 lars_rule: Literal["official", "decayed"] = "official", multilabel: bool = False,
                 linear_eval: bool = False, ood_data: dict | None = None, pretrained: str | None = None,
                 weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["pretrained", "weights"])
        if stage not in ("supervised", "contrastive", "finetune"):
            raise ValueError(f"stage={stage!r}: choose 'supervised', 'contrastive' or 'finetune'")
        if stage == "contrastive" and head_layers < 2:
            raise ValueError(f"head_layers={head_layers}: the contrastive stage needs SimCLR's nonlinear head (>= 2)")
        check_scaled_optimizer(optimizer, lr_scaling)
        if ood_data is not None and "." not in str(ood_data.get("class_path", "")):
            raise ValueError(f"ood_data={ood_data!r}: give {{'class_path': 'zoo.data.SomeDataModule', 'init_args': "
                             "{...}}")
        if linear_eval and stage != "finetune":
            raise ValueError(f"linear_eval=True freezes f while the classifier learns: a 'finetune' stage option, "
                             f"not one of stage={stage!r}")
        if multilabel and ood_data is not None:
            raise ValueError("ood_data scores accuracy on a shifted test split, a single-label measure: not with "
                             "multilabel=True")
        self.net = REMEDISNet(depth, width, in_chans, groups, num_classes,
                              head_layers if stage == "contrastive" else 0, out_features)
        if linear_eval:
            self.net.f.requires_grad_(False)
        self.metrics = nn.ModuleDict({
            s: torchmetrics.AUROC(task="multilabel", num_labels=num_classes) if multilabel
            else torchmetrics.Accuracy(task="multiclass", num_classes=num_classes) for s in ("val", "test")})
        self.defer_pretrained(pretrained, weights, "the previous stage's release")
        self.init_weights_from(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def supervised_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of class scores against labels (-1: unlabelled, skipped), or with `multilabel` the mean
        sigmoid cross-entropy against 0/1 targets [B, C] (rows holding a -1: unlabelled, skipped)."""
        if not self.hparams.multilabel:
            if not (y >= 0).any():  # no labels: zero, still through the scores (DDP needs every weight used)
                return 0 * scores.sum()
            return F.cross_entropy(scores, y, ignore_index=-1)
        known = (y >= 0).all(1)
        if not known.any():
            return 0 * scores.sum()
        return F.binary_cross_entropy_with_logits(scores[known], y[known].to(scores.dtype))

    def evaluate(self, batch: Any, stage: str) -> None:
        if not self.hparams.multilabel:
            return super().evaluate(batch, stage)
        x, y = batch
        scores = self(x)
        self.metrics[stage](scores, y.long())
        self.log(f"{stage}/auc", self.metrics[stage], prog_bar=True)
        self.log(f"{stage}/loss", self.supervised_loss(scores, y), sync_dist=True)

    def setup(self, stage: str) -> None:
        if source := self.take_pretrained():
            self.load_pretrained(source)

    def load_pretrained(self, source: str) -> None:
        """Copy f (keys net.f.*) from a REMEDIS release of any stage; a missing or mis-shaped encoder weight is an
        error naming it. The release's heads are left out, except that fine-tuning a fine-tuned release (the
        paper's retraining on out-of-distribution labels) goes on with its classifier, same classes assumed."""
        from zoo._hub import load_state_strict, resolve

        src = resolve(source)
        state = {k: v for k, v in src.state.items() if k.startswith("net.f.")}
        if not state:
            raise ValueError(f"{source}: no REMEDIS encoder weights (net.f.*) in it; train the previous stage "
                             "first (`zoo fit --config configs/remedis/...`) or name its release")
        load_state_strict(self.net.f, {k[len("net.f."):]: v for k, v in state.items()})
        if self.hparams.stage == "finetune" and src.init_args.get("stage") == "finetune":
            head = {k[len("net.classifier."):]: v for k, v in src.state.items() if k.startswith("net.classifier.")}
            load_state_strict(self.net.classifier, head)

    def predict_step(self, batch, batch_idx) -> torch.Tensor:
        """Class ids, or with `multilabel` each class's probability [B, C]."""
        if self.hparams.multilabel:
            return torch.sigmoid(self(batch[0]))
        return super().predict_step(batch, batch_idx)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.hparams.stage == "contrastive":
            view_a, view_b = x
            n = view_a.shape[0]
            h, z = self.net.project(torch.cat([view_a, view_b]))
            contrastive = nt_xent(z[:n], z[n:], self.hparams.temperature)
            probe = self.supervised_loss(self.net.classifier(h.detach()), torch.cat([y, y]))
            self.log("train/nt_xent", contrastive, prog_bar=True, batch_size=n)
            self.log("train/probe_loss", probe, batch_size=n)
            return contrastive + probe
        if isinstance(x, (tuple, list)):  # a two-view loader: the first view, as SimCLR's fine-tuning reads it
            x = x[0]
        if self.hparams.linear_eval:
            with torch.no_grad():
                h = self.net.features(x)
            loss = self.supervised_loss(self.net.classifier(h), y)
        else:
            loss = self.supervised_loss(self(x), y)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        return scaled_optimizer(self, hp.optimizer, hp.lr, hp.lr_scaling, hp.momentum, hp.weight_decay,
                                hp.warmup_epochs, hp.lars_rule)

    @torch.no_grad()
    def accuracy_on(self, dataset, batch: int = 500) -> float:
        """Accuracy of the network as it is (eval mode) on a dataset of (image, label) pairs."""
        self.eval()
        right = 0
        for start in range(0, len(dataset), batch):
            x, y = dataset.__getitems__(list(range(start, min(start + batch, len(dataset)))))
            right += int((self(x.to(self.device)).argmax(1).cpu() == y).sum())
        return right / len(dataset)

    def analyse(self, folder: Path | None, datamodule: Any = None) -> dict[str, Any]:
        """Zero-shot accuracy on `ood_data`'s test split, when it is set; in the contrastive stage, a picture of
        the views it trained on (`views.png`: the first training batch's two views of 20 images)."""
        out: dict[str, Any] = {}
        spec = self.hparams.ood_data
        if spec:
            module_path, _, name = spec["class_path"].rpartition(".")
            ood = getattr(importlib.import_module(module_path), name)(**spec.get("init_args", {}))
            ood.setup("test")
            acc = self.accuracy_on(ood.test_set)
            out["metrics"] = {"test/ood_acc": acc}
            out["tables"] = {"Zero-shot out-of-distribution accuracy":
                             f"| test set | accuracy |\n|---|---|\n| {name} (shifted source, no retraining) | {acc:.4f} |"}
        if self.hparams.stage == "contrastive" and folder is not None and datamodule is not None:
            from zoo._plots import sample_grids

            datamodule.setup("fit")
            (view_a, view_b), _ = next(iter(datamodule.train_dataloader()))
            out["figures"] = {"views.png": sample_grids(
                {"view a": view_a[:20], "view b (the same images)": view_b[:20]}, folder / "views.png",
                "Two views of each image, as the contrastive stage drew them", nrow=5)}
        return out
