"""Lightning glue for forward-gradient learning: one LocalMixer module trained by local activity-perturbed forward
gradients (the paper's LG-FG-A), by weight perturbation, or by backprop (the same net, the BP baseline), and the
paper's central measurement, the error of each gradient estimator against the true gradient, run by `analyse`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.models.forward_gradient.model import LocalMixer, estimator_error, forward_gradients, true_gradients
from zoo.optim import warmup_cosine

MODES = ("fg_activity", "fg_weight", "backprop")
#: the estimators `analyse` compares: (row label, metric slug, perturbation, local losses)
ESTIMATORS = (("FG-W (weight perturbation, global loss)", "fg_w", "weight", False),
              ("FG-A (activity perturbation, global loss)", "fg_a", "activity", False),
              ("LG-FG-W (weight perturbation, local losses)", "lg_fg_w", "weight", True),
              ("LG-FG-A (activity perturbation, local losses)", "lg_fg_a", "activity", True))


@register_model("localmixer")
class LocalMixerClassifier(ZooClassifier):
    """The LocalMixer (arXiv 2210.03310, §5) trained without backprop by local activity-perturbed forward gradients.

    Every step draws fresh Gaussian perturbations, computes directional derivatives with `torch.func.jvp` and writes
    the estimates into `.grad`; the optimiser steps as usual. Under DDP the estimates are averaged over ranks (one
    all-reduce), each rank drawing its own perturbations, so ranks stay identical.

    Args:
        image_size, in_channels, num_patches, num_blocks, channels, groups, hidden, num_classes: the LocalMixer's
            shape (Table 2 names them size/patches-per-side/groups, e.g. M/8/16 = 512 channels, 8x8 patches,
            16 groups); hidden defaults to channels.
        mean, std: per-channel input normalisation.
        mode: "fg_activity" (FG-A), "fg_weight" (FG-W) or "backprop" (true gradients).
        local: True: every block learns from its own local losses behind stop-gradients (with fg_activity: LG-FG-A,
            the paper's method; with backprop: LG-BP); False: from the read-out's loss, end to end (with backprop:
            the BP baseline).
        lr, momentum, weight_decay, warmup_epochs: SGD with a linear warm-up and cosine decay per step; weight decay
            on weights, not biases.
        readout_lr_scale: learning-rate factor of the final read-out (the reference code's last_layer_lr, 0.1).
        seed: seeds the perturbations of each step (a function of seed, rank and step: exact resume).
        weights: a zoo checkpoint to start from (fine-tuning); not saved as a hyperparameter.

    `analyse` measures each estimator's relative mean squared error against the true gradient on one batch at the
    trained weights: FG-W and FG-A of the global loss, and of the local losses (`variance_batch` examples,
    `variance_samples` draws each).
    """

    head_keys = ("net.heads.*", "net.readout.*")
    variance_batch = 64
    variance_samples = 100

    def __init__(self, image_size: int = 28, in_channels: int = 1, num_patches: int = 4, num_blocks: int = 2,
                 channels: int = 128, groups: int = 16, hidden: int | None = None, num_classes: int = 10,
                 mean: list[float] = [0.2860], std: list[float] = [0.3530], mode: str = "fg_activity",
                 local: bool = True, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 1e-4,
                 warmup_epochs: float = 1.0, readout_lr_scale: float = 0.1, seed: int = 0, weights: str | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean and std need one value per input channel ({in_channels})")
        self.save_hyperparameters(ignore=["weights"])
        self.automatic_optimization = False
        self.net = LocalMixer(image_size, in_channels, num_patches, num_blocks, channels, groups, num_classes, hidden)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.metrics = nn.ModuleDict({s: torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
                                      for s in ("val", "test")})
        self.init_weights_from(weights)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(x))

    # ---------------------------------------------------------------- training
    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.hparams.seed * 1_000_003 + self.global_rank) * 1_000_003 + self.global_step)
        return g

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """This step's gradient (estimate) for every trained parameter of `self.net`, and losses to log."""
        hp, x = self.hparams, self.normalise(x)
        if hp.mode == "backprop":
            grads = true_gradients(self.net, x, y, hp.local)
            with torch.no_grad():
                return grads, {"loss": F.cross_entropy(self.net(x), y)}
        return forward_gradients(self.net, x, y, "activity" if hp.mode == "fg_activity" else "weight", hp.local,
                                 self._generator())

    def _set_grads(self, grads: dict[str, torch.Tensor]) -> None:
        """Write the estimates into `.grad`, averaged over DDP ranks in one all-reduce (identity on one device)."""
        named = [(k, p) for k, p in self.net.named_parameters() if k in grads]
        flat = self.trainer.strategy.reduce(torch.cat([grads[k].flatten() for k, _ in named]), reduce_op="mean")
        for (_, p), g in zip(named, flat.split([p.numel() for _, p in named])):
            p.grad = g.view_as(p).to(p.dtype)

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        grads, logs = self.gradients(*batch)
        opt.zero_grad(set_to_none=True)
        self._set_grads(grads)
        opt.step()
        self.lr_schedulers().step()
        self.log("train/loss", logs["loss"], prog_bar=True)
        if "local_loss" in logs:
            self.log("train/local_loss", logs["local_loss"])

    def configure_optimizers(self):
        hp = self.hparams
        groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "readout": []}
        for name, p in self.net.named_parameters():
            kind = "readout" if name.startswith("readout") else "no_decay" if name.endswith("bias") else "decay"
            groups[kind].append(p)
        opt = torch.optim.SGD([
            {"params": groups["decay"], "weight_decay": hp.weight_decay},
            {"params": groups["no_decay"], "weight_decay": 0.0},
            {"params": groups["readout"], "weight_decay": hp.weight_decay, "lr": hp.lr * hp.readout_lr_scale},
        ], lr=hp.lr, momentum=hp.momentum)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else None
        warmup = round(total * hp.warmup_epochs / epochs) if epochs else 0
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, min(warmup, total)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---------------------------------------------------------------- the paper's measurement
    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """The variance of FG-W vs FG-A, with the global loss and with local losses, against the true gradient of
        the same objective (§3.4, §4), at the trained weights on `variance_batch` training examples."""
        if datamodule is None or getattr(datamodule, "train_set", None) is None:
            return {}
        n, k = self.variance_batch, self.variance_samples
        x, y = datamodule.train_set.__getitems__(list(range(n)))
        x, y = self.normalise(x.to(self.device)), y.to(self.device)
        g = torch.Generator(device=self.device).manual_seed(self.hparams.seed)
        rows = {}
        for label, slug, perturb, local in ESTIMATORS:
            print(f"analyse: {k} draws of {label}", flush=True)
            rows[slug] = estimator_error(self.net, x, y, perturb, local, k, g)
        metrics = {f"grad/relvar_{s}": r["rel_mse"] for s, r in rows.items()}
        metrics |= {f"grad/cos_{s}": r["cosine"] for s, r in rows.items()}
        table = "\n".join(
            ["| estimator | E‖ĝ−g‖²/‖g‖² | E cos(ĝ, g) | ‖mean ĝ − g‖²/‖g‖² (≈ col. 2 / draws if unbiased) |",
             "|---|---|---|---|"] +
            [f"| {label} | {rows[s]['rel_mse']:.4g} | {rows[s]['cosine']:.4f} | {rows[s]['rel_bias']:.4g} |"
             for label, s, *_ in ESTIMATORS])
        title = (f"Forward-gradient error against the true gradient of the same loss, blocks' weights, trained "
                 f"weights, {n} training examples, {k} draws each")
        out: dict[str, Any] = {"metrics": metrics, "tables": {title: table}, "figures": {}}
        if folder is not None:
            path = self._plot(rows, Path(folder) / "gradient_variance.png")
            out["figures"][path.name] = path
        return out

    def _plot(self, rows: dict[str, dict[str, float]], path: Path) -> Path:
        from zoo._plots import _pyplot, _save

        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.2))
        labels = [label.split(" (")[0] for label, *_ in ESTIMATORS]
        values = [rows[s]["rel_mse"] for _, s, *_ in ESTIMATORS]
        bars = ax.bar(labels, values, color=["tab:red", "tab:orange", "tab:purple", "tab:green"])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("E‖ĝ − g‖² / ‖g‖²  (log)")
        return _save(fig, path, "Relative variance of forward-gradient estimators (lower is better)")
