"""The NAM paper's measurements beside the module: shape-function figures (each feature's learned f_k with the
ensemble's spread over the training data's density, as the paper's figures) and its comparison, NAM against
logistic/linear regression, a DNN, gradient-boosted trees and the explainable boosting machine, cross-validated on
identical folds (every model sees the same encoded inputs, trains on the same training rows and early-stops, where
it early-stops, on the same validation rows).

Baselines (hyperparameters are the packages' defaults; the paper tuned its baselines, so these are not its
numbers):
- linear: scikit-learn's LogisticRegression (L2, C = 1) or LinearRegression;
- dnn: the official code's DNN, 10 ReLU layers of 100 units (He-normal), dropout 0.15, trained like the NAM
  (Adam, the recipe's learning rate and decay, balanced batches, best validation epoch kept) for at least 100
  epochs: it is cheap, and a deep net needs more steps than a short NAM recipe gives;
- gbt: LightGBM (learning rate 0.05, up to 1000 trees, early stopping after 50 rounds without a better validation
  AUC or L2); the paper used XGBoost;
- ebm: interpret's ExplainableBoostingClassifier/Regressor (defaults with its own inner validation, except 4 outer
  bags instead of 14, which cuts its fit from minutes to about a minute on 2 CPU cores).
A baseline whose package is not installed (`pip install hinton-zoo[nam]`) is skipped and the table says why.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo._plots import _pyplot, _save

DNN_EPOCHS = 100
LABELS = {"nam": "NAM (this recipe)", "linear": "logistic / linear regression", "dnn": "DNN (10 x 100 ReLU)",
          "gbt": "gradient-boosted trees (LightGBM)", "ebm": "EBM (interpret)"}


def score(y: np.ndarray, pred: np.ndarray, task: str) -> float:
    """ROC AUC of scores (binary) or RMSE (regression)."""
    from sklearn.metrics import roc_auc_score

    if task == "binary":
        return float(roc_auc_score(y, pred))
    return float(np.sqrt(np.mean((np.asarray(pred) - y) ** 2)))


@torch.no_grad()
def predict(module, x: torch.Tensor) -> np.ndarray:
    module.eval()
    return module(x.to(module.device)).cpu().numpy()


# ---------------------------------------------------------------- shape functions
@torch.no_grad()
def shape_curves(module, dm, points: int = 200) -> list[dict[str, Any]]:
    """Per original column: raw x values (numeric: a grid over the training range; categorical: its levels), each
    member's centred contribution [E, n] (its mean over the training rows subtracted) and the training rows'
    values for the density."""
    enc, names = dm.encoder, dm.feature_names
    train = dm.train_set.x
    f_train = module.shape_functions(train.to(module.device)).cpu()  # [N, E, K]
    out = []
    for i, col in enumerate(enc.numeric):
        grid = torch.zeros(points, len(names))
        grid[:, i] = torch.linspace(-1, 1, points)
        f = module.shape_functions(grid.to(module.device)).cpu()[:, :, i]
        f = f - f_train[:, :, i].mean(0)
        out.append({"name": col, "kind": "numeric", "x": enc.inverse(i, grid[:, i].numpy()), "f": f.T.numpy(),
                    "data": enc.inverse(i, train[:, i].numpy())})
    start = len(enc.numeric)
    for col, levels in enc.categories.items():
        idx = list(range(start, start + len(levels)))
        start += len(levels)
        rows = -torch.ones(len(levels), len(names))
        rows[:, idx] = 2 * torch.eye(len(levels)) - 1
        f = module.shape_functions(rows.to(module.device)).cpu()[:, :, idx].sum(-1)
        f = f - f_train[:, :, idx].sum(-1).mean(0)
        counts = ((train[:, idx] > 0).sum(0)).numpy()
        out.append({"name": col, "kind": "categorical", "x": levels, "f": f.T.numpy(), "data": counts})
    return out


def shape_figure(curves: list[dict[str, Any]], path: Path, title: str = "", ylabel: str = "contribution") -> Path:
    """One panel per column: the ensemble's mean shape function with its min-max band over members; beneath, the
    training data's density (histogram, or the count per category)."""
    plt = _pyplot()
    cols = min(3, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig = plt.figure(figsize=(4.2 * cols, 3.8 * rows))
    grid = fig.add_gridspec(rows * 5, cols, hspace=1.2)
    for n, c in enumerate(curves):
        r, k = divmod(n, cols)
        ax = fig.add_subplot(grid[r * 5:r * 5 + 3, k])
        dens = fig.add_subplot(grid[r * 5 + 3, k], sharex=ax if c["kind"] == "numeric" else None)
        f = c["f"]
        if c["kind"] == "numeric":
            ax.plot(c["x"], f.mean(0), color="tab:blue", lw=1.5)
            ax.fill_between(c["x"], f.min(0), f.max(0), color="tab:blue", alpha=0.25, lw=0)
            dens.hist(c["data"], bins=40, color="tab:red", alpha=0.6)
        else:
            pos = np.arange(len(c["x"]))
            err = np.stack([f.mean(0) - f.min(0), f.max(0) - f.mean(0)])
            ax.bar(pos, f.mean(0), yerr=err, color="tab:blue", alpha=0.7, capsize=2)
            ax.set_xticks([])
            dens.bar(pos, c["data"], color="tab:red", alpha=0.6)
            dens.set_xticks(pos, [str(v)[:14] for v in c["x"]], rotation=25, fontsize=6)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_title(c["name"], fontsize=9)
        ax.set_ylabel(ylabel, fontsize=7)
        dens.set_yticks([])
        dens.set_ylabel("data", fontsize=6)
    return _save(fig, path, title)


# ---------------------------------------------------------------- baselines
class DNN(nn.Module):
    """The official code's DNN baseline: 10 ReLU layers of 100 units (He-normal), dropout 0.15, a linear output."""

    def __init__(self, in_features: int, width: int = 100, depth: int = 10, dropout: float = 0.15):
        super().__init__()
        layers, a = [], in_features
        for _ in range(depth):
            lin = nn.Linear(a, width)
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.ReLU(), nn.Dropout(dropout)]
            a = width
        self.net = nn.Sequential(*layers, nn.Linear(a, 1))
        nn.init.kaiming_normal_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def fit_dnn(dm, task: str, epochs: int, lr: float, decay_rate: float, seed: int) -> np.ndarray:
    """Train the DNN like the NAM (Adam, per-epoch decay, the DataModule's batches) and return its test predictions
    at the best validation epoch."""
    torch.manual_seed(seed)
    net = DNN(dm.train_set.x.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, decay_rate)
    loss_fn = nn.BCEWithLogitsLoss() if task == "binary" else nn.MSELoss()
    best, best_state = -math.inf, None
    for _ in range(epochs):
        net.train()
        for x, y in dm.train_dataloader():
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            s = score(dm.val_set.y.numpy(), net(dm.val_set.x).numpy(), task)
        s = s if task == "binary" else -s
        if s > best:
            best, best_state = s, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        return net(dm.test_set.x).numpy()


def fit_baseline(name: str, dm, task: str, module) -> np.ndarray:
    """Test-set predictions of one baseline fitted on the fold's training rows; ImportError when its package is
    missing."""
    x, y = dm.train_set.x.numpy(), dm.train_set.y.numpy()
    xv, yv, xt = dm.val_set.x.numpy(), dm.val_set.y.numpy(), dm.test_set.x.numpy()
    hp, seed = module.hparams, module.hparams.seed
    binary = task == "binary"
    if name == "linear":
        from sklearn.linear_model import LinearRegression, LogisticRegression

        model = LogisticRegression(max_iter=5000) if binary else LinearRegression()
        model.fit(x, y)
    elif name == "dnn":
        epochs = max(DNN_EPOCHS, module.trainer.max_epochs if module._trainer else 0)
        return fit_dnn(dm, task, epochs, hp.lr, hp.decay_rate, seed)
    elif name == "gbt":
        import lightgbm

        cls = lightgbm.LGBMClassifier if binary else lightgbm.LGBMRegressor
        model = cls(n_estimators=1000, learning_rate=0.05, metric="auc" if binary else "l2", random_state=seed,
                    n_jobs=2, verbose=-1)
        model.fit(x, y, eval_set=[(xv, yv)], callbacks=[lightgbm.early_stopping(50, verbose=False)])
    elif name == "ebm":
        from interpret.glassbox import ExplainableBoostingClassifier, ExplainableBoostingRegressor

        ebm = ExplainableBoostingClassifier if binary else ExplainableBoostingRegressor
        model = ebm(outer_bags=4, random_state=seed, n_jobs=2)
        model.fit(x, y)
    else:
        raise ValueError(f"unknown baseline {name!r}; choose from {list(LABELS)[1:]}")
    return model.predict_proba(xt)[:, 1] if binary else model.predict(xt)


# ---------------------------------------------------------------- cross-validation
def fold_data(dm, fold: int):
    if fold == dm.fold:
        return dm
    other = type(dm)(**{**vars(dm.hp), "fold": fold}, batch_size=dm.batch_size, seed=dm.seed)
    other.setup()
    return other


def train_fold(module, dm):
    """This recipe on another fold: a fresh module (feature nets sized on that fold's training rows) and Trainer
    with the recipe's epochs, seeded as the recipe."""
    import lightning as L

    L.seed_everything(module.hparams.seed, verbose=False)
    fresh = type(module)(**{**module.zoo_init_args(), "units": None, "cv_folds": 0})
    trainer = L.Trainer(max_epochs=module.trainer.max_epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                        accelerator="cpu", devices=1,
                        check_val_every_n_epoch=module.trainer.check_val_every_n_epoch)
    trainer.fit(fresh, datamodule=dm)
    return fresh


def analyse(module, dm, folder: Path | None) -> dict[str, Any]:
    """The shape-function figure of this ensemble, then (cv_folds > 0) every fold's test score of the recipe and of
    each baseline: metrics cv/<model>_<auc|rmse>_mean and _std (sample standard deviation over folds)."""
    hp = module.hparams
    dm.setup("test")
    module.eval()
    figures, metrics, tables = {}, {}, {}
    if folder is not None:
        curves = shape_curves(module, dm)
        path = shape_figure(curves, folder / "shape_functions.png",
                            title=f"NAM shape functions, ensemble of {hp.members} (mean, min-max band; "
                                  f"{dm.dataset} fold {dm.fold}, training-row density below)",
                            ylabel="logit contribution" if hp.task == "binary" else "contribution")
        figures[path.name] = path
    if not hp.cv_folds:
        return {"figures": figures}
    if hp.cv_folds != dm.folds:
        raise ValueError(f"cv_folds={hp.cv_folds} but the DataModule splits into {dm.folds} folds")
    name = "auc" if hp.task == "binary" else "rmse"
    scores: dict[str, list[float]] = {m: [] for m in ["nam", *hp.baselines]}
    skipped: dict[str, str] = {}
    for f in range(hp.cv_folds):
        fdm = fold_data(dm, f)
        print(f"nam analyse: fold {f + 1}/{hp.cv_folds}", flush=True)
        model = module if f == dm.fold else train_fold(module, fdm)
        y = fdm.test_set.y.numpy()
        scores["nam"].append(score(y, predict(model, fdm.test_set.x), hp.task))
        for b in hp.baselines:
            if b in skipped:
                continue
            try:
                start = time.perf_counter()
                scores[b].append(score(y, fit_baseline(b, fdm, hp.task, module), hp.task))
                print(f"nam analyse: fold {f + 1} {b}: {scores[b][-1]:.4f} ({time.perf_counter() - start:.0f} s)",
                      flush=True)
            except ImportError as err:
                skipped[b] = f"not installed ({err.name}): pip install hinton-zoo[nam]"
    rows = [f"| model | {name.upper()} mean ± std over {hp.cv_folds} folds | per fold |", "|---|---|---|"]
    for m, vals in scores.items():
        if m in skipped:
            rows.append(f"| {LABELS[m]} | skipped: {skipped[m]} | – |")
            continue
        mean, std = float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        metrics[f"cv/{m}_{name}_mean"], metrics[f"cv/{m}_{name}_std"] = mean, std
        rows.append(f"| {LABELS[m]} | {mean:.4f} ± {std:.4f} | {', '.join(f'{v:.4f}' for v in vals)} |")
    tables[f"{hp.cv_folds}-fold cross-validation on identical splits ({dm.dataset}, test {name.upper()})"] = \
        "\n".join(rows)
    return {"metrics": metrics, "figures": figures, "tables": tables}
