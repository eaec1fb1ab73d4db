"""Lightning glue for Neural Additive Models: the official training (Adam, learning rate decayed every epoch,
class-balanced batches from the DataModule, per-network early stopping on the validation metric) and the paper's
measurements `zoo reproduce` makes (shape functions, cross-validated comparison with the baselines: analysis.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.models.nam.model import NAM, Activation

Task = Literal["binary", "regression"]


@register_model("nam")
class NAMModule(ZooModule):
    """An ensemble of Neural Additive Models (arXiv 2004.13912) for binary classification or regression.

    Each member minimises its own loss (cross-entropy of the sigmoid link, or mean squared error) plus the output
    penalty and weight decay of model.py; the members' losses are summed, so each follows its own gradient. After
    every validation each member keeps its best weights by the validation metric (AUC, or RMSE for regression), and
    training stops once no member has improved for `patience_epochs` epochs (the official early stopping, which
    restores each model's best checkpoint). The ensemble predicts the mean of the members' logits.

    Args:
        in_features: model inputs (after one-hot encoding).
        units: first-layer width of each feature net; None: the official rule, min(num_basis_functions,
            units_multiplier x distinct training values of the input), filled in from the DataModule at setup.
        num_basis_functions, units_multiplier: that rule's cap and multiplier (paper: 1000 and 2).
        hidden: ReLU layers after the first ([64, 32]; [] for shallow feature nets).
        activation, relu_n, dropout, feature_dropout, members: the NAM (model.py).
        output_penalty, weight_decay: λ₁ and λ₂ of the paper's regularisers.
        task: "binary" or "regression" (whose intercept β starts at the training rows' mean target).
        lr, decay_rate: Adam's learning rate, multiplied by decay_rate after every epoch.
        patience_epochs: early stopping (official: 60).
        cv_folds: `analyse` also trains this recipe on the DataModule's other folds and reports the mean and spread
            over all of them; 0: no cross-validation.
        baselines: the paper's comparison, fitted on the same folds in `analyse`: any of "linear" (logistic or
            linear regression), "dnn", "gbt" (LightGBM), "ebm" (interpret).
        seed: initialisation seed (member e differs from e' through the generator's stream).
        weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, in_features: int = 13, units: list[int] | None = None, num_basis_functions: int = 1000,
                 units_multiplier: int = 2, hidden: list[int] = [64, 32], activation: Activation = "exu",
                 relu_n: float = 1.0, dropout: float = 0.5, feature_dropout: float = 0.0, members: int = 1,
                 output_penalty: float = 0.0, weight_decay: float = 0.0, task: Task = "binary", lr: float = 0.01,
                 decay_rate: float = 0.995, patience_epochs: int = 60, cv_folds: int = 0,
                 baselines: list[str] = ["linear", "dnn", "gbt", "ebm"], seed: int = 0, weights: str | None = None):
        super().__init__()
        if task not in ("binary", "regression"):
            raise ValueError(f"task must be 'binary' or 'regression', got {task!r}")
        self.save_hyperparameters(ignore=["weights"])
        self._pretrained = bool(weights)
        self.nam = self._build(units or [num_basis_functions] * in_features)
        score = {"binary": lambda: torchmetrics.classification.MultilabelAUROC(num_labels=members, average="none"),
                 "regression": lambda: torchmetrics.MeanSquaredError(squared=False, num_outputs=members)}[task]
        self.member_metric = torch.nn.ModuleDict({s: score() for s in ("val", "test")})
        ens = {"binary": torchmetrics.classification.BinaryAUROC,
               "regression": lambda: torchmetrics.MeanSquaredError(squared=False)}[task]
        self.ensemble_metric = torch.nn.ModuleDict({s: ens() for s in ("val", "test")})
        self.register_buffer("best_score", torch.full((members,), -float("inf")))
        self.register_buffer("best_epoch", torch.zeros(members, dtype=torch.long))
        self._best: dict[str, torch.Tensor] = {}
        self.init_weights_from(weights)

    def _build(self, units: list[int]) -> NAM:
        hp = self.hparams
        return NAM(hp.in_features, units, list(hp.hidden), hp.activation, hp.relu_n, hp.dropout, hp.feature_dropout,
                   hp.members, hp.seed)

    def setup(self, stage: str) -> None:
        """Sizes the feature nets from the training data when `units` was not given (the official rule)."""
        dm = self._trainer.datamodule if self._trainer is not None else None
        if dm is None or not hasattr(dm, "unique_counts"):
            if self.hparams.units is None:
                raise ValueError("units=None sizes the feature nets from a TabularDataModule; give units otherwise")
            return
        if dm.num_features != self.hparams.in_features:
            raise ValueError(f"the data have {dm.num_features} inputs ({dm.feature_names}), the model "
                             f"in_features={self.hparams.in_features}")
        if self.hparams.units is None:
            hp = self.hparams
            hp.units = [min(hp.num_basis_functions, hp.units_multiplier * c) for c in dm.unique_counts()]
            self.nam = self._build(hp.units).to(self.device)
        if stage == "fit" and self.hparams.task == "regression" and not self._pretrained:
            # β starts at the training rows' mean target: from 0, a target far from 0 (diabetes: 25-346) takes
            # Adam at 0.01 thousands of steps to reach. The official code starts at 0, close to its Housing
            # target (in $100,000). A resumed fit then restores the saved β over this.
            with torch.no_grad():
                self.nam.bias.fill_(float(dm.train_set.y.double().mean()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's prediction [B]: mean of the members' logits (or regression outputs)."""
        return self.nam(x).mean(-1)

    def shape_functions(self, x: torch.Tensor) -> torch.Tensor:
        """f_k(x_k) of every member [B, E, K], without dropout."""
        return self.nam.feature_outputs(x)

    # ------------------------------------------------------------ training
    def member_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's penalised loss [E]: fit term + λ₁ output penalty + λ₂ weight decay."""
        hp = self.hparams
        out = self.nam(x)
        target = y[:, None].to(out.dtype).expand_as(out)
        if hp.task == "binary":
            loss = F.binary_cross_entropy_with_logits(out, target, reduction="none").mean(0)
        else:
            loss = (out - target).pow(2).mean(0)
        if hp.output_penalty:
            loss = loss + hp.output_penalty * self.nam.output_penalty(x)
        if hp.weight_decay:
            loss = loss + hp.weight_decay * self.nam.weight_decay()
        return loss

    def training_step(self, batch, batch_idx):
        losses = self.member_losses(*batch)
        self.log("train/loss", losses.mean(), prog_bar=True)
        return losses.sum()

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, self.hparams.decay_rate)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # ------------------------------------------------------------ evaluation and early stopping
    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        out = self.nam(x)
        if self.hparams.task == "binary":
            self.member_metric[stage].update(out, y[:, None].long().expand_as(out))
            self.ensemble_metric[stage].update(out.mean(-1), y.long())
            self.log(f"{stage}/loss", F.binary_cross_entropy_with_logits(out.mean(-1), y.float()), sync_dist=True)
        else:
            self.member_metric[stage].update(out, y[:, None].expand_as(out))
            self.ensemble_metric[stage].update(out.mean(-1), y)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def _epoch_end(self, stage: str) -> torch.Tensor:
        name = "auc" if self.hparams.task == "binary" else "rmse"
        members = self.member_metric[stage].compute().reshape(-1)
        self.log(f"{stage}/{name}", self.ensemble_metric[stage].compute(), prog_bar=True)
        self.log(f"{stage}/{name}_member_mean", members.mean())
        self.member_metric[stage].reset()
        self.ensemble_metric[stage].reset()
        return members if self.hparams.task == "binary" else -members

    def on_validation_epoch_end(self) -> None:
        score = self._epoch_end("val")
        if self._trainer is None or self.trainer.sanity_checking:
            return
        better = score > self.best_score
        self.best_score = torch.where(better, score, self.best_score)
        self.best_epoch = torch.where(better, self.current_epoch, self.best_epoch)
        with torch.no_grad():
            for k, p in self.nam.named_parameters():
                keep = better.view(-1, *[1] * (p.dim() - 1))
                self._best[k] = torch.where(keep, p, self._best.get(k, p)).detach().clone()
        if bool((self.current_epoch - self.best_epoch > self.hparams.patience_epochs).all()):
            self.trainer.should_stop = True

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def on_fit_end(self) -> None:
        """Each member's best weights by the validation metric (the official best checkpoints)."""
        self.restore_best()

    @torch.no_grad()
    def restore_best(self) -> None:
        for k, p in self.nam.named_parameters():
            if k in self._best:
                p.copy_(self._best[k])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nam_best"] = {k: v.cpu() for k, v in self._best.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._best = {k: v.to(self.device) for k, v in checkpoint.get("nam_best", {}).items()}

    # ------------------------------------------------------------ the paper's measurements
    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """Shape functions of this ensemble (figure) and, over `cv_folds` folds, this recipe against the baselines
        on identical splits (analysis.py)."""
        if datamodule is None:
            return {}
        from zoo.models.nam.analysis import analyse

        return analyse(self, datamodule, folder)
