"""Distilling a Neural Network Into a Soft Decision Tree (Frosst & Hinton 2017): a soft binary tree trained on
labels or on a zoo teacher's soft targets, predicting with its most probable leaf."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.models.soft_tree.model import BalancePenalty, SoftDecisionTree, leaf_loss
from zoo.optim import with_cooldown


@register_model("soft_tree")
class SoftTreeClassifier(ZooClassifier):
    """A soft decision tree trained on the labels (one-hot targets T).

    `forward` returns log Q of the leaf with the greatest path probability (the paper's prediction, logged as
    `acc`); the path-probability-weighted mixture of all leaves is logged as `acc_mixture`.

    Args:
        in_features, num_classes, depth: the tree's shape (the paper's MNIST tree: 784 inputs, depth 8, 255
            inner filters and 256 leaves).
        beta: initial value of the learned inverse temperature β on the filter activations.
        lam: λ, the strength of the balance penalty at the root; a node at depth d gets λ·2^{−d}.
        window: the running average's window at the root, in batches, doubling with each level (0: no
            running average, every α_i from the current batch alone).
        lr, weight_decay, cooldown: Adam's settings and a linear learning-rate cooldown over the second half.
    """

    head_keys = ("tree.phi",)

    def __init__(self, in_features: int = 784, num_classes: int = 10, depth: int = 8, beta: float = 1.0,
                 lam: float = 0.1, window: float = 0.0, lr: float = 0.003, weight_decay: float = 0.0,
                 cooldown: bool = True, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.tree = SoftDecisionTree(in_features, num_classes, depth, beta)
        self.penalty = BalancePenalty(depth, lam, window)
        self.metrics = nn.ModuleDict({
            f"{s}_{kind}": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
            for s in ("val", "test") for kind in ("leaf", "mixture")})
        self.init_weights_from(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tree.most_probable_leaf(self.tree(x)["P_leaf"])

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The target distributions T the tree is trained on, [B, K]: here the one-hot labels."""
        return F.one_hot(y, self.hparams.num_classes).to(x.dtype)

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.tree(x)
        data = leaf_loss(out["P_leaf"], self.tree.log_Q(), self.targets(x, y))
        penalty = self.penalty(out["p"], out["P_inner"])
        loss = data + penalty
        self.log("train/loss", loss.detach(), prog_bar=True)
        if self._trainer is None or self.global_step % self.trainer.log_every_n_steps == 0:  # each log costs
            self.log_dict({"train/leaf_loss": data.detach(), "train/penalty": penalty.detach(),
                           "train/beta": self.tree.beta.detach()})
        return loss

    def evaluate(self, batch, stage: str) -> None:
        x, y = batch
        P_leaf = self.tree(x)["P_leaf"]
        self.metrics[f"{stage}_leaf"](self.tree.most_probable_leaf(P_leaf).argmax(1), y)
        self.metrics[f"{stage}_mixture"](self.tree.mixture(P_leaf).argmax(1), y)
        self.log(f"{stage}/acc", self.metrics[f"{stage}_leaf"], prog_bar=True)
        self.log(f"{stage}/acc_mixture", self.metrics[f"{stage}_mixture"])
        T = F.one_hot(y, self.hparams.num_classes).to(x.dtype)
        self.log(f"{stage}/leaf_loss", leaf_loss(P_leaf, self.tree.log_Q(), T), sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        return with_cooldown(opt, self.planned_epochs, hp.cooldown)

    # ---------------------------------------------------------------- what the tree learned
    def release_figures(self, folder: Path, datamodule=None) -> dict[str, Path]:
        """The learned filters w_i of the top three levels (7 inner nodes) laid out as the tree, as in the
        paper's figure of its MNIST tree; red pushes an input right, blue left."""
        side = int(round(self.hparams.in_features ** 0.5))
        if side * side != self.hparams.in_features:
            return {}
        from zoo._plots import _pyplot, _save

        plt = _pyplot()
        levels = min(3, self.hparams.depth)
        w = self.tree.w.detach().float().cpu()
        cols = 2 ** levels  # the bottom row's nodes side by side, each upper node centred over its children
        fig = plt.figure(figsize=(cols * 1.3, levels * 1.5 + 0.4))
        grid = fig.add_gridspec(levels, 2 * cols)
        for k in range(levels):
            span = 2 * cols // 2 ** k
            for j in range(2 ** k):
                i = 2 ** k - 1 + j
                start = j * span + span // 2 - 1
                ax = fig.add_subplot(grid[k, start:start + 2])
                lim = float(w[i].abs().max()) or 1.0
                ax.imshow(w[i].view(side, side).numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
                ax.set_title(f"node {i}", fontsize=7)
                ax.axis("off")
        beta = float(self.tree.beta.detach())
        path = _save(fig, folder / "tree_filters.png",
                     f"Soft decision tree: filters of the top {2 ** levels - 1} inner nodes (β = {beta:.3g})")
        return {path.name: path}

    def analyse(self, folder: Path, datamodule=None) -> dict[str, Any]:
        """On the test set: how many leaves the most-probable-leaf rule uses and how decisive the paths are
        (the mean of the greatest path probability), the learned β, and a histogram of leaf usage."""
        metrics: dict[str, float] = {"beta": float(self.tree.beta.detach())}
        if datamodule is None or getattr(datamodule, "test_set", None) is None:
            return {"metrics": metrics}
        self.eval()
        counts = torch.zeros(self.tree.num_leaves, dtype=torch.long)
        top_p = []
        with torch.no_grad():
            for x, _ in datamodule.test_dataloader():
                P_leaf = self.tree(x.to(self.device))["P_leaf"].float().cpu()
                top, leaf = P_leaf.max(1)
                counts += torch.bincount(leaf, minlength=self.tree.num_leaves)
                top_p.append(top)
        metrics["leaves_used"] = float((counts > 0).sum())
        metrics["test/mean_max_path_prob"] = float(torch.cat(top_p).mean())
        figures = {}
        if folder is not None:
            path = self._leaf_usage_plot(counts, datamodule, Path(folder) / "leaf_usage.png")
            figures[path.name] = path
        return {"metrics": metrics, "figures": figures}

    def _leaf_usage_plot(self, counts: torch.Tensor, datamodule, path: Path) -> Path:
        from zoo._plots import _pyplot, _save

        plt = _pyplot()
        classes = list(getattr(datamodule, "classes", ())) or [str(k) for k in range(self.hparams.num_classes)]
        leaf_class = self.tree.phi.detach().argmax(1).cpu()
        colours = plt.get_cmap("tab10")
        fig, ax = plt.subplots(figsize=(10, 3))
        ax.bar(range(len(counts)), counts.numpy(), width=1.0, color=[colours(int(c) % 10) for c in leaf_class])
        for k, name in enumerate(classes):
            ax.bar([0], [0], color=colours(k % 10), label=name)
        ax.set_xlabel("leaf (left to right)")
        ax.set_ylabel("test images")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _save(fig, path, f"Most probable leaf of each test image ({int((counts > 0).sum())} of "
                                f"{len(counts)} leaves used; colour: the leaf's most likely class)")


@register_model("soft_tree_distilled")
class DistilledSoftTree(SoftTreeClassifier):
    """A soft decision tree trained on the soft targets of a zoo teacher network instead of the labels, as the
    paper distils its neural nets into trees: T = softmax(teacher logits / temperature).

    Args:
        teacher: the zoo checkpoint that provides the targets (catalogue name, release folder or hf-hub:).
            It is loaded when training starts, kept frozen in eval mode, and is not part of the tree's
            weights, so loading the tree for inference never needs the teacher.
        temperature: softmax temperature of the teacher's targets (1: its own predictive distribution; the
            paper gives no temperature for the tree).
        The other arguments are SoftTreeClassifier's.
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10, depth: int = 8, beta: float = 1.0,
                 lam: float = 0.1, window: float = 0.0, lr: float = 0.003, weight_decay: float = 0.0,
                 cooldown: bool = True, teacher: str = "kd-fmnist-teacher", temperature: float = 1.0,
                 weights: str | None = None):
        super().__init__(in_features, num_classes, depth, beta=beta, lam=lam, window=window, lr=lr,
                         weight_decay=weight_decay, cooldown=cooldown)
        self.save_hyperparameters(ignore=["weights"])
        self.__dict__["_teacher"] = None  # outside the module tree: not saved, not trained, not moved by Lightning
        self.init_weights_from(weights)

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._teacher is None:
            import zoo

            self.__dict__["_teacher"] = zoo.load(self.hparams.teacher)
            for p in self._teacher.parameters():
                p.requires_grad_(False)
        with torch.no_grad():
            logits = self._teacher.to(x.device).eval()(x)
        return F.softmax(logits.float() / self.hparams.temperature, dim=-1).to(x.dtype)
