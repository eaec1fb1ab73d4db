"""Lookahead (Zhang, Lucas, Hinton & Ba 2019): the small CNN trained by Lookahead around SGD or Adam, evaluated
on the slow weights, and the paper's robustness claim tested as a small learning-rate sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo._registry import register_model
from zoo.models.baselines import CNNClassifier
from zoo.models.lookahead.model import lr_sweep, sensitivity
from zoo.nn import ConvNet
from zoo.optim import Lookahead, LookaheadSlowWeights, with_cooldown


@register_model("lookahead_cnn")
class LookaheadCNN(CNNClassifier):
    """The CNN of CNNClassifier, its SGD or Adam wrapped in Lookahead (Algorithm 1): every k fast steps the slow
    weights move φ ← φ + α(θ − φ) and the fast weights restart from them. Validation and test run on the slow
    weights (the module brings `zoo.optim.LookaheadSlowWeights`), and the trained model keeps them.

    Args:
        in_channels, image_size, channels, hidden, num_classes, dropout: the ConvNet's shape.
        optimizer, lr, momentum, weight_decay, cooldown: the inner optimiser, as for CNNClassifier.
        k, alpha: Lookahead's synchronisation period and slow-weights step size (the paper's grid: k ∈ {5, 10},
            α ∈ {0.5, 0.8}).

    `analyse` runs the learning-rate sweep of `sweep_lrs` (`sweep_steps` updates per run) for SGD, Adam,
    Lookahead(SGD) and Lookahead(Adam) on fresh networks of the same shape.
    """

    #: the robustness sweep: learning rates per optimiser (momentum 0.9 for SGD) and updates per run
    sweep_lrs = {"SGD": [0.01, 0.05, 0.2], "Adam": [3e-4, 3e-3, 3e-2],
                 "Lookahead(SGD)": [0.01, 0.05, 0.2], "Lookahead(Adam)": [3e-4, 3e-3, 3e-2]}
    sweep_steps = 500

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: list[int] = [16, 32],
                 hidden: list[int] = [128], num_classes: int = 10, dropout: float = 0.0, optimizer: str = "adam",
                 lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0, cooldown: bool = True,
                 k: int = 5, alpha: float = 0.5, weights: str | None = None):
        super().__init__(in_channels, image_size, channels, hidden, num_classes, dropout, optimizer=optimizer, lr=lr,
                         momentum=momentum, weight_decay=weight_decay, cooldown=cooldown)
        self.save_hyperparameters(ignore=["weights"])
        self.init_weights_from(weights)

    def configure_optimizers(self):
        opt = Lookahead(self.base_optimizer(), k=self.hparams.k, alpha=self.hparams.alpha)
        return with_cooldown(opt, self.planned_epochs, self.hparams.cooldown)

    def configure_callbacks(self):
        return [LookaheadSlowWeights()]  # replaces one given in the Trainer's callbacks, so it never runs twice

    def analyse(self, folder: Path, datamodule=None) -> dict[str, Any]:
        """The paper's claim that Lookahead makes the inner optimiser less sensitive to its learning rate:
        12 short runs from one initialisation, on the same batches, scored on the validation set."""
        if datamodule is None or getattr(datamodule, "train_set", None) is None:
            return {}
        hp = self.hparams
        rows = lr_sweep(lambda: ConvNet(hp.in_channels, hp.image_size, list(hp.channels), list(hp.hidden),
                                        hp.num_classes, hp.dropout),
                        self.sweep_lrs, datamodule.train_dataloader(), datamodule.val_dataloader(), self.sweep_steps,
                        k=hp.k, alpha=hp.alpha, device=self.device)
        summary = sensitivity(rows)
        slug = {"SGD": "sgd", "Adam": "adam", "Lookahead(SGD)": "lookahead_sgd", "Lookahead(Adam)": "lookahead_adam"}
        metrics = {f"sweep/{slug[n]}_{key}": v for n, s in summary.items() for key, v in s.items()}
        lrs_of = {n: list(lrs) for n, lrs in self.sweep_lrs.items()}
        table = "\n".join(
            ["| optimiser | " + " | ".join(f"lr {i + 1}" for i in range(max(map(len, lrs_of.values())))) +
             " | spread of val acc |", "|---|" + "---|" * (max(map(len, lrs_of.values())) + 1)] +
            [f"| {n} | " + " | ".join(
                f"{r['lr']:g}: {r['val_acc']:.4f}" + (" (diverged)" if r["diverged"] else f", loss {r['val_loss']:.3f}")
                for r in rows if r["optimizer"] == n) + f" | {summary[n]['spread']:.4f} |" for n in summary])
        title = (f"Learning-rate sweep: validation accuracy after {self.sweep_steps} updates "
                 f"(Lookahead k={hp.k}, alpha={hp.alpha:g}; SGD momentum 0.9)")
        out: dict[str, Any] = {"metrics": metrics, "tables": {title: table}, "figures": {}}
        if folder is not None:
            path = self._plot(rows, Path(folder) / "lr_sweep.png")
            out["figures"][path.name] = path
        return out

    def _plot(self, rows: list[dict], path: Path) -> Path:
        from zoo._plots import _pyplot, _save

        plt = _pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for ax, family in zip(axes, ("SGD", "Adam")):
            for name, style in ((family, "--o"), (f"Lookahead({family})", "-o")):
                run = [r for r in rows if r["optimizer"] == name]
                ax.plot([r["lr"] for r in run], [r["val_acc"] for r in run], style, ms=4, label=name)
            ax.set_xscale("log")
            ax.set_xlabel("learning rate")
            ax.set_ylabel("validation accuracy")
            ax.legend(fontsize=8)
        return _save(fig, path, f"Validation accuracy after {self.sweep_steps} updates from the same initialisation")
