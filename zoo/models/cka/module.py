"""Similarity of Neural Network Representations Revisited (Kornblith, Norouzi, Lee & Hinton 2019): networks of
one architecture trained from different seeds, and the paper's test of similarity indexes on them (§6.1)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from zoo._module import ZooClassifier
from zoo.data.augment import random_hflip, random_translate
from zoo._registry import register_model
from zoo.models.cka.correspondence import correspondence_accuracy, mean_between_members, similarity_matrices
from zoo.models.cka.model import GroupedTinyCNN, TinyCNN
from zoo.optim import warmup_cosine, with_cooldown

# Table 2 of the paper (10 Tiny-10 networks on CIFAR-10, logits excluded): accuracy of finding the corresponding
# layer by maximum similarity. Indexes not computed here: CCA (mean ρ) 1.4, SVCCA (mean ρ) 9.9, SVCCA (R²) 15.1,
# PWCCA 11.1, linear regression 45.4, linear HSIC 22.2.
PAPER_TABLE2 = {"linear_cka": 0.993, "rbf_cka_0.2": 0.806, "rbf_cka_0.4": 0.991, "rbf_cka_0.8": 0.993, "cca_r2": 0.106}


class MemberAccuracy(Metric):
    """Accuracy of each of M classifiers from logits [B, M, C]; compute() gives [M]. Sums sync under DDP."""

    full_state_update = False

    def __init__(self, members: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("correct", torch.zeros(members), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.correct += (logits.argmax(-1) == target[:, None]).sum(0)
        self.total += target.shape[0]

    def compute(self) -> torch.Tensor:
        return self.correct / self.total


@register_model("cnn_seeds")
class SeedCNNs(ZooClassifier):
    """M copies of one small CNN (the paper's Tiny-10 layout), member m initialised from seed `seeds[m]`, trained
    side by side on the same batches. The members are one grouped network (zoo.models.cka.GroupedTinyCNN), and
    the loss is the sum of their cross-entropies, so each member follows exactly the gradient it would alone.

    `forward` returns every member's logits, [B, M, num_classes]; `member(m)` gives member m as a standalone
    TinyCNN. Validation and test log the mean, min and max of the members' accuracies.

    Args:
        in_channels, channels, num_classes, stem_stride: each member's shape (TinyCNN; the paper: widths 16, 32,
            64 and stride 1 on CIFAR-10).
        seeds: one seed per member; member m starts as `torch.manual_seed(seeds[m]); TinyCNN(...)` would.
        optimizer: "sgd" (with `momentum`) or "adam"; lr, momentum, weight_decay: its settings.
        schedule: the learning rate over training: "cosine" decay to zero per step, "cooldown" (constant, then a
            linear decay per epoch over the second half) or "constant".
        shift, flip: training-batch augmentation, the same for every member: a random translation by up to
            `shift` pixels (zero fill) and a left-right mirror with probability 1/2 when `flip`.
    """

    head_keys = ("net.head.*",)

    def __init__(self, in_channels: int = 1, channels: list[int] = [16, 32, 64], num_classes: int = 10,
                 stem_stride: int = 1, seeds: list[int] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], optimizer: str = "sgd",
                 lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
                 schedule: Literal["cosine", "cooldown", "constant"] = "cooldown", shift: int = 0, flip: bool = False,
                 weights: str | None = None):
        super().__init__()
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        if schedule not in ("cosine", "cooldown", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'cooldown' or 'constant', got {schedule!r}")
        self.save_hyperparameters(ignore=["weights"])
        self.net = GroupedTinyCNN(list(seeds), in_channels, list(channels), num_classes, stem_stride)
        self.metrics = nn.ModuleDict({s: MemberAccuracy(len(seeds)) for s in ("val", "test")})
        self.init_weights_from(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def member(self, m: int) -> TinyCNN:
        return self.net.member(m)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's mean cross-entropy over the batch, [M]."""
        return F.cross_entropy(logits.transpose(1, 2), y[:, None].expand(-1, logits.shape[1]), reduction="none").mean(0)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.hparams.flip:
            x = random_hflip(x)
        losses = self.loss(self(random_translate(x, self.hparams.shift)), y)
        self.log("train/loss", losses.detach().mean(), prog_bar=True)  # the members' mean; the objective is the sum
        return losses.sum()

    def evaluate(self, batch, stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.metrics[stage].update(logits, y)
        self.log(f"{stage}/loss", self.loss(logits, y).mean(), sync_dist=True)

    def _log_accuracy(self, stage: str) -> None:
        acc = self.metrics[stage].compute()
        self.log_dict({f"{stage}/acc": acc.mean(), f"{stage}/acc_min": acc.min(), f"{stage}/acc_max": acc.max()},
                      prog_bar=stage == "val")
        self.metrics[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_accuracy("val")

    def on_test_epoch_end(self) -> None:
        self._log_accuracy("test")

    def predict_step(self, batch, batch_idx) -> torch.Tensor:
        return self(batch[0]).argmax(-1)

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "adam":
            opt = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if hp.schedule != "cosine" or self._trainer is None:  # no Trainer: the optimiser alone
            return with_cooldown(opt, self.planned_epochs, hp.schedule == "cooldown")
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, 0))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---------------------------------------------------------------- the layer-correspondence test (§6.1)
    @torch.no_grad()
    def representations(self, x: torch.Tensor, batch_size: int = 500) -> list[torch.Tensor]:
        """Every member's nine representations of x (eval mode), one [n, M, ...] tensor per layer, on the CPU."""
        self.eval()
        chunks = [self.net.features(c.to(self.device)) for c in x.split(batch_size)]
        return [torch.cat([c[i] for c in chunks]).cpu() for i in range(len(chunks[0]))]

    def analyse(self, folder: Path, datamodule=None, examples: int = 1000,
                rbf_thresholds: tuple[float, ...] = (0.2, 0.4, 0.8)) -> dict[str, Any]:
        """The paper's sanity check on the first `examples` test images: for every ordered pair of members and
        every layer of the first, is the most similar layer of the second the same layer? Linear CKA, RBF CKA
        at the paper's three bandwidths and R²_CCA, on the flattened conv feature maps and the pooled features.
        CCA cannot tell representations with at least as many features as examples apart (Theorem 1), so it is
        also scored on the layers narrower than that alone. Also a heatmap of each index between layers,
        averaged over the pairs (the paper's Figure 2)."""
        if datamodule is None or getattr(datamodule, "test_set", None) is None:
            return {}
        n = min(examples, len(datamodule.test_set))
        x, _ = datamodule.test_set.__getitems__(list(range(n)))
        reps = self.representations(x)
        sims = similarity_matrices(reps, list(rbf_thresholds))
        narrow = torch.tensor([r[0, 0].numel() < n for r in reps])
        if 0 < narrow.sum() < len(reps):
            sims["cca_r2_narrow"] = sims["cca_r2"][:, narrow][:, :, :, narrow]
        metrics, rows = {}, []
        for name, sim in sims.items():
            acc, per_layer = correspondence_accuracy(sim)
            metrics[f"layer_match/{name}"] = float(acc)
            layers = torch.arange(1, len(reps) + 1)[narrow] if name == "cca_r2_narrow" else range(1, len(reps) + 1)
            paper = PAPER_TABLE2.get(name)
            rows.append(f"| {_label(name)} | {float(acc):.3f} | "
                        + ", ".join(f"{int(i)}: {float(a):.2f}" for i, a in zip(layers, per_layer))
                        + f" | {'–' if paper is None else paper} |")
        members = self.net.members
        table = "\n".join([
            "| index | accuracy | per layer | paper, Table 2 (CIFAR-10) |", "|---|---|---|---|", *rows, "",
            f"{members} networks, {members * (members - 1)} ordered pairs, the first {n} test images. Layer shapes: "
            + ", ".join(f"{i + 1}: {'x'.join(map(str, r.shape[2:]))}" for i, r in enumerate(reps)) + ".",
        ])
        path = _heatmaps({_label(k): mean_between_members(s) for k, s in sims.items() if k != "cca_r2_narrow"},
                         folder / "layer_similarity.png")
        return {"metrics": metrics,
                "tables": {"Finding the corresponding layer of another seed by maximum similarity": table},
                "figures": {path.name: path}}


def _label(name: str) -> str:
    if name.startswith("rbf_cka_"):
        return f"CKA (RBF {name[8:]})"
    return {"linear_cka": "CKA (linear)", "cca_r2": "CCA (R²)",
            "cca_r2_narrow": "CCA (R²), layers with fewer features than examples"}[name]


def _heatmaps(mats: dict[str, torch.Tensor], path: Path) -> Path:
    from zoo._plots import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(mats), figsize=(2.6 * len(mats), 2.8), squeeze=False)
    for ax, (title, m) in zip(axes[0], mats.items()):
        layers = m.shape[0]
        im = ax.imshow(m.numpy(), origin="lower", cmap="magma", extent=(0.5, layers + 0.5, 0.5, layers + 0.5))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer (network B)", fontsize=8)
        ax.set_ylabel("layer (network A)", fontsize=8)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
    return _save(fig, path, "Similarity between layers of networks trained from different seeds "
                            "(mean over pairs)")
