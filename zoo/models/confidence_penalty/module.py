"""Regularizing Neural Networks by Penalizing Confident Output Distributions (Pereyra, Tucker, Chorowski, Kaiser &
Hinton 2017): an MLP trained with the confidence penalty, and the paper's MNIST comparison with dropout and label
smoothing over several seeds, run by `zoo reproduce`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError

from zoo._registry import register_model
from zoo.data.augment import random_translate
from zoo.losses import confidence_penalty, entropy
from zoo.models.baselines import MLPClassifier
from zoo.optim import fit_in_memory

#: the regularisers of the paper's Table 1 (MNIST), each alone, as overrides of this module's own settings; the
#: paper found α = 0.1 and β = 1.0 best and does not give its dropout rate, so the usual 0.5 is used
COMPARED = {
    "dropout": {"dropout": 0.5, "beta": 0.0, "label_smoothing": 0.0},
    "label smoothing": {"dropout": 0.0, "beta": 0.0, "label_smoothing": 0.1},
    "confidence penalty": {"dropout": 0.0, "label_smoothing": 0.0},
}
PAPER_ERR = {"dropout": 1.28, "label smoothing": 1.23, "confidence penalty": 1.17}  # Table 1, %, each ± 0.06


@register_model("confidence_penalty_mlp")
class ConfidencePenaltyMLP(MLPClassifier):
    """A ReLU MLP trained with L = −log p(y|x) − β·H(p(·|x)) (eq. 2 of the paper); with `hinge` Γ the thresholded
    form −log p(y|x) + β·max(0, Γ − H) of §3.1. `label_smoothing` and `dropout` make the other regularisers of
    the paper's comparison the same class, so `analyse` trains all of them the same way.

    `analyse` (after training, in `zoo reproduce`) repeats the paper's MNIST comparison (Table 1): dropout alone,
    label smoothing alone and the confidence penalty alone (this module's β), each trained `analysis_epochs`
    epochs from `analysis_seeds` seeds with this module's optimiser settings; it reports the test error as mean ±
    standard deviation, with the test NLL, the mean entropy of the predictions and the ECE.

    Args:
        in_features, hidden, num_classes, dropout, lr, momentum, weight_decay, cooldown, jitter: as MLPClassifier.
        beta: the penalty weight β (the paper's best on MNIST: 1.0).
        hinge: the entropy threshold Γ, or None for the plain penalty (what the paper's experiments use).
        label_smoothing: α of label smoothing, added to the cross-entropy (0: none).
        init_std: weights drawn from N(0, init_std²) and zero biases, as the paper's MNIST networks (0.01);
            None keeps PyTorch's default initialisation.
        analysis_seeds, analysis_epochs: the size of the comparison `analyse` runs.
    """

    def __init__(self, in_features: int = 784, hidden: list[int] = [1024, 1024], num_classes: int = 10,
                 beta: float = 1.0, hinge: float | None = None, label_smoothing: float = 0.0, dropout: float = 0.0,
                 init_std: float | None = 0.01, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
                 cooldown: bool = True, jitter: int = 0, analysis_seeds: int = 3, analysis_epochs: int = 8,
                 weights: str | None = None):
        super().__init__(in_features, hidden, num_classes, dropout=dropout, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, cooldown=cooldown, jitter=jitter)
        if beta < 0:
            raise ValueError(f"beta must be >= 0 (a negative weight would reward confidence), got {beta}")
        self.save_hyperparameters(ignore=["weights"])
        if init_std is not None:
            for layer in self.net.modules():
                if isinstance(layer, torch.nn.Linear):
                    torch.nn.init.normal_(layer.weight, 0.0, init_std)
                    torch.nn.init.zeros_(layer.bias)
        self.init_weights_from(weights)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        logits = self(random_translate(x, hp.jitter))
        return (F.cross_entropy(logits, y, label_smoothing=hp.label_smoothing)
                + confidence_penalty(logits, hp.beta, hp.hinge))

    # ---------------------------------------------------------------- the paper's comparison (Table 1)
    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        hp = self.hparams
        if datamodule is None or hp.analysis_seeds < 1 or hp.analysis_epochs < 1:
            return {}
        datamodule.setup("fit")
        x, y = _tensors(datamodule.train_set, self.device)
        xt, yt = _tensors(datamodule.test_set, self.device)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in COMPARED}
        total, done = len(COMPARED) * hp.analysis_seeds, 0
        for seed in range(hp.analysis_seeds):
            for name, overrides in COMPARED.items():
                start = time.perf_counter()
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)  # the weights, dropout masks and batch order of this run alone
                    net = self.sibling(overrides)
                    fit_in_memory(net, net.loss, x, y, hp.analysis_epochs, lr=hp.lr, momentum=hp.momentum,
                                  weight_decay=hp.weight_decay, cooldown=hp.cooldown, seed=seed)
                runs[name].append(_test_scores(net, xt, yt))
                done += 1
                print(f"confidence penalty analysis {done}/{total}: {name}, seed {seed}: test error "
                      f"{runs[name][-1]['err']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
        return _summary(runs, hp)

    def sibling(self, overrides: dict[str, float]) -> ConfidencePenaltyMLP:
        """A freshly initialised module of this shape and settings, except `overrides` (one regulariser's)."""
        return type(self)(**{**self.zoo_init_args(), **overrides}).to(self.device)


def _tensors(dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = dataset.__getitems__(list(range(len(dataset))))
    return x.to(device), y.to(device)


@torch.no_grad()
def _test_scores(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    logits = torch.cat([net(c) for c in x.split(1000)])
    ece = MulticlassCalibrationError(num_classes=logits.shape[1], n_bins=15).to(logits.device)
    return {"err": float((logits.argmax(1) != y).float().mean()), "nll": float(F.cross_entropy(logits, y)),
            "entropy": float(entropy(logits).mean()), "ece": float(ece(F.softmax(logits, dim=1), y))}


def _summary(runs: dict[str, list[dict[str, float]]], hp) -> dict[str, Any]:
    def stat(name: str, key: str) -> tuple[float, float]:
        v = torch.tensor([r[key] for r in runs[name]], dtype=torch.float64)
        return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0

    metrics, rows = {}, []
    for name in runs:
        key = name.replace(" ", "_")
        err, err_std = stat(name, "err")
        metrics.update({f"test/err_{key}": err, f"test/err_{key}_std": err_std,
                        f"test/entropy_{key}": stat(name, "entropy")[0]})
        nll, ent, ece = (stat(name, k)[0] for k in ("nll", "entropy", "ece"))
        rows.append(f"| {name} | {100 * err:.2f} ± {100 * err_std:.2f} | {nll:.4f} | {ent:.4f} | {ece:.4f} "
                    f"| {PAPER_ERR[name]:.2f} ± 0.06 |")
    shape = "-".join(map(str, [hp.in_features, *hp.hidden, hp.num_classes]))
    table = "\n".join([
        "| regulariser | test error (%) | test NLL | mean entropy (nats) | test ECE (15 bins) "
        "| paper, MNIST test error (%) |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    title = (f"Table 1 repeated: {shape}, {hp.analysis_epochs} epochs, mean ± std over {hp.analysis_seeds} seeds "
             f"(β = {hp.beta:g}, α = {COMPARED['label smoothing']['label_smoothing']:g}, "
             f"dropout {COMPARED['dropout']['dropout']:g})")
    return {"metrics": metrics, "tables": {title: table}}
