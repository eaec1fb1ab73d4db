"""When Does Label Smoothing Help? (Müller, Kornblith & Hinton 2019): an MLP trained on smoothed targets, and the
paper's three measurements run by `zoo reproduce` (calibration, the template-plane picture, distillation: student
accuracy and the equivalent smoothing γ). Its §4 estimate of the mutual information between an example's index and
its logits (under a Gaussian approximation) is not computed."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError

from zoo._plots import _pyplot, _save
from zoo._registry import register_model
from zoo.data.augment import random_translate
from zoo.losses import distillation_loss
from zoo.models.baselines import MLPClassifier
from zoo.models.label_smoothing.model import (
    equivalent_smoothing, fit_temperature, project_onto_plane, template_plane, with_bias,
)
from zoo.nn import MLP
from zoo.optim import fit_in_memory

#: the class triples of the template-plane figures (Fashion-MNIST indices), as the paper's Fig. 1 picks three
#: unrelated classes, then two similar ones and a third
PLANES = {"plane_dissimilar.png": (1, 7, 8), "plane_similar.png": (0, 6, 1)}
PLANE_POINTS = 500  # examples per class and split in a figure
ECE_BINS = 15  # the paper's reliability diagrams and ECE use 15 bins


@register_model("label_smoothing_mlp")
class LabelSmoothingMLP(MLPClassifier):
    """A ReLU MLP trained with label smoothing: cross-entropy against y(1 − α) + α/K (PyTorch's
    `cross_entropy(label_smoothing=α)`). With α = 0 it is the same network on hard targets, the paper's baseline;
    both run the same `analyse`, so their model cards compare.

    `analyse` (after training, in `zoo reproduce`) measures:
    - calibration (§3): test ECE with 15 bins and NLL as trained, then after temperature scaling with T fitted
      on the validation set;
    - the penultimate layer (§2): activations of training and validation examples of three classes projected
      onto the plane through those classes' templates (final-layer weights with bias), one figure per triple;
    - distillation (§4): a smaller student (`student_hidden`) trained for `student_epochs` only on this network's
      soft targets at `distill_temperature` (β = 1: the labels are not used, as the paper's experiments), next to
      the same student trained alone on the labels, and γ, how smooth those soft targets are.

    Args:
        in_features, hidden, num_classes, dropout, lr, momentum, weight_decay, cooldown, jitter: as MLPClassifier.
        alpha: the label-smoothing factor α (the paper: 0.1 for its penultimate-layer figures).
        distill_temperature, student_hidden, student_epochs: the distillation measurement.
    """

    def __init__(self, in_features: int = 784, hidden: list[int] = [800, 800], num_classes: int = 10,
                 alpha: float = 0.1, dropout: float = 0.0, lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0, cooldown: bool = True, jitter: int = 0, distill_temperature: float = 4.0,
                 student_hidden: list[int] = [400, 400], student_epochs: int = 10, weights: str | None = None):
        super().__init__(in_features, hidden, num_classes, dropout=dropout, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, cooldown=cooldown, jitter=jitter)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.save_hyperparameters(ignore=["weights"])
        self.init_weights_from(weights)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self(random_translate(x, self.hparams.jitter))
        return F.cross_entropy(logits, y, label_smoothing=self.hparams.alpha)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The activations the final layer reads: the last hidden layer's output."""
        return self.net.body(x.flatten(1))

    def templates(self) -> torch.Tensor:
        """One template per class [K, D + 1]: its final-layer weights with the bias appended (§1.1)."""
        return torch.cat([self.net.head.weight, self.net.head.bias[:, None]], dim=1).detach()

    # ---------------------------------------------------------------- the paper's measurements
    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        if datamodule is None:
            return {}
        datamodule.setup("fit")
        data = {s: _tensors(getattr(datamodule, f"{s}_set"), self.device) for s in ("train", "val", "test")}
        self.eval()
        with torch.no_grad():
            logits = {s: torch.cat([self(c) for c in x.split(1000)]) for s, (x, _) in data.items()}
        out = self._calibration(logits, {s: y for s, (_, y) in data.items()})
        classes = list(getattr(datamodule, "classes", ())) or [str(k) for k in range(self.hparams.num_classes)]
        if folder is not None:
            out["figures"] = {name: self.plane_figure(data, triple, classes, Path(folder) / name)
                              for name, triple in PLANES.items() if max(triple) < self.hparams.num_classes}
        distil = self._distillation(data, logits["train"])
        out["metrics"].update(distil["metrics"])
        out["tables"].update(distil["tables"])
        return out

    def _calibration(self, logits: dict, labels: dict) -> dict[str, Any]:
        t = fit_temperature(logits["val"], labels["val"])
        z, y = logits["test"], labels["test"]
        row = {}
        for name, temp in (("as trained", 1.0), ("temperature-scaled", t)):
            ece = MulticlassCalibrationError(num_classes=self.hparams.num_classes, n_bins=ECE_BINS).to(self.device)
            row[name] = (float(ece(F.softmax(z / temp, dim=1), y)), float(F.cross_entropy(z / temp, y)))
        acc = float((z.argmax(1) == y).float().mean())
        metrics = {"test/ece": row["as trained"][0], "temperature": t,
                   "test/ece_temp_scaled": row["temperature-scaled"][0],
                   "test/nll_temp_scaled": row["temperature-scaled"][1]}
        table = "\n".join([
            f"| α = {self.hparams.alpha:g} | T | test ECE ({ECE_BINS} bins) | test NLL | test accuracy |",
            "|---|---|---|---|---|",
            f"| as trained | 1 | {row['as trained'][0]:.4f} | {row['as trained'][1]:.4f} | {acc:.4f} |",
            f"| temperature scaling (T fitted on validation) | {t:.3f} | {row['temperature-scaled'][0]:.4f} "
            f"| {row['temperature-scaled'][1]:.4f} | {acc:.4f} |",
        ])
        return {"metrics": metrics, "tables": {"Calibration (§3)": table}}

    @torch.no_grad()
    def plane_coordinates(self, x: torch.Tensor, triple: tuple[int, int, int]) -> torch.Tensor:
        """Penultimate activations of x (with the bias input 1) projected onto the plane of three templates."""
        origin, basis = template_plane(self.templates()[list(triple)].double())
        return project_onto_plane(with_bias(self.penultimate(x)).double(), origin, basis).float()

    def plane_figure(self, data: dict, triple: tuple[int, int, int], classes: list[str], path: Path) -> Path:
        """Fig. 1 of the paper for one class triple: training and validation examples side by side."""
        plt = _pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
        for ax, split in zip(axes, ("train", "val")):
            x, y = data[split]
            for k in triple:
                idx = (y == k).nonzero().squeeze(1)[:PLANE_POINTS]
                xy = self.plane_coordinates(x[idx], triple).cpu()
                ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.5, label=classes[k])
            ax.set_title("training examples" if split == "train" else "validation examples", fontsize=9)
            ax.set_aspect("equal", adjustable="box")
        axes[0].legend(fontsize=8, markerscale=4)
        title = (f"α = {self.hparams.alpha:g}: penultimate layer projected onto the plane of the templates of "
                 + ", ".join(classes[k] for k in triple))
        return _save(fig, path, title)

    def _distillation(self, data: dict, teacher_logits: torch.Tensor) -> dict[str, Any]:
        hp = self.hparams
        x, y = data["train"]
        x = x.flatten(1)
        t = hp.distill_temperature
        gamma = equivalent_smoothing(teacher_logits, y, t)
        xt, yt = data["test"]
        acc = {}
        for name, targets, objective in (
            ("alone", y, lambda net: lambda xb, yb: F.cross_entropy(net(xb), yb)),
            ("distilled", teacher_logits, lambda net: lambda xb, tb: distillation_loss(net(xb), tb, t)),
        ):
            start = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # both students start from the same weights
                net = MLP(hp.in_features, list(hp.student_hidden), hp.num_classes).to(self.device)
                fit_in_memory(net, objective(net), x, targets, hp.student_epochs, lr=hp.lr, momentum=hp.momentum,
                              cooldown=hp.cooldown)
            with torch.no_grad():
                pred = torch.cat([net(c.flatten(1)) for c in xt.split(1000)]).argmax(1)
            acc[name] = float((pred == yt).float().mean())
            print(f"label smoothing α = {hp.alpha:g}: student {name}, test acc {acc[name]:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        shape = "-".join(map(str, [hp.in_features, *hp.student_hidden, hp.num_classes]))
        table = "\n".join([
            f"| student {shape}, {hp.student_epochs} epochs | test accuracy |",
            "|---|---|",
            f"| trained alone on the labels | {acc['alone']:.4f} |",
            f"| distilled from this network (α = {hp.alpha:g}) at T = {t:g}, soft targets only | "
            f"{acc['distilled']:.4f} |",
            "",
            f"Equivalent smoothing γ of this network's soft targets at T = {t:g} on the training set: {gamma:.4f}.",
        ])
        return {"metrics": {"test/acc_student_alone": acc["alone"], "test/acc_student_distilled": acc["distilled"],
                            "train/teacher_gamma": gamma},
                "tables": {"Distillation (§4)": table}}


def _tensors(dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = dataset.__getitems__(list(range(len(dataset))))
    return x.to(device), y.to(device)
