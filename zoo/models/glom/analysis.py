"""GLOM's measurements beside the module.

Classify (ellipse world): the read-out's accuracy at every step t = 0..T, whether islands form (the top level's mean
cosine similarity between columns of the same object, and between columns of the two different objects of an image,
at every step), the accuracy under pixel noise and on poses outside the training range, and pictures of the islands.
Denoise (Fashion-MNIST): a linear probe of each level's mean embedding at t = 0 and t = T against raw pixels, how
alike the columns of one image are at each level, and pictures of the filled-in patches and of the islands.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zoo._plots import _pyplot, _save
from zoo.metrics import linear_probe
from zoo.models.glom.model import island_scores, patchify, unpatchify


@torch.no_grad()
def states_of(module, images: torch.Tensor, batch_size: int = 250, iterations: int | None = None) -> torch.Tensor:
    """All states [T+1, L, n, N, d] for n images, on the CPU."""
    module.eval()
    out = [torch.stack(module.settle(images[i:i + batch_size].to(module.device), iterations)).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out, 2)


@torch.no_grad()
def accuracy_per_step(module, states: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per-column accuracy over occupied columns at each step, from the top level."""
    head = module.head.cpu()
    keep = labels >= 0
    accs = [(head(s[-1]).argmax(-1) == labels)[keep].float().mean().item() for s in states]
    module.head.to(module.device)
    return accs


def pca_colours(z: torch.Tensor) -> torch.Tensor:
    """Embeddings [..., d] -> RGB [..., 3] in [0, 1]: the first three principal components, each scaled to its range."""
    flat = F.normalize(z.reshape(-1, z.shape[-1]), dim=-1)
    centred = flat - flat.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    p = centred @ v[:3].T
    lo, hi = p.amin(0), p.amax(0)
    return ((p - lo) / (hi - lo).clamp(min=1e-6)).reshape(*z.shape[:-1], 3)


def island_figure(images: torch.Tensor, states: torch.Tensor, occupied: torch.Tensor, steps: list[int], level: int,
                  grid: int, path: Path, title: str) -> Path:
    """Rows: the images, then the chosen level's embeddings at each of `steps`, one colour per column (the first three
    principal components over everything shown), so an island of agreement is a patch of one colour. Columns with
    `occupied` False are left white."""
    plt = _pyplot()
    n = len(images)
    rgb = pca_colours(states[steps][:, level])  # [S, n, N, 3]
    rgb[:, ~occupied] = 1.0
    fig, axes = plt.subplots(1 + len(steps), n, figsize=(1.5 * n, 1.5 * (1 + len(steps))), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(images[j].permute(1, 2, 0).squeeze(-1), cmap="gray_r")
        for i in range(len(steps)):
            axes[i + 1, j].imshow(rgb[i, j].reshape(grid, grid, 3).numpy())
    for a in axes.flat:
        a.set_xticks([]), a.set_yticks([])
    axes[0, 0].set_ylabel("image")
    for i, t in enumerate(steps):
        axes[i + 1, 0].set_ylabel(f"level {level + 1}, t = {t}")
    return _save(fig, path, title)


def curve_figure(series: dict[str, list[float]], path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, ys in series.items():
        ax.plot(range(len(ys)), ys, marker="o", label=name)
    ax.set_xlabel("step t"), ax.grid(alpha=0.3), ax.legend(fontsize=8)
    return _save(fig, path, title)


def analyse_classify(module, datamodule, folder: Path | None) -> dict[str, Any]:
    from zoo.models.glom.data import CLASSES

    T = module.hparams.iterations
    ds = datamodule.test_set
    images, labels, owner = ds.x, ds.y, ds.more[0]
    states = states_of(module, images)
    accs = accuracy_per_step(module, states, labels)
    metrics = {f"acc/t{t}": a for t, a in enumerate(accs)}
    within, between = [], []
    for s in states:
        w, b = island_scores(s[-1], owner)
        within.append(w.item()), between.append(b.item())
    metrics |= {f"island/within_t{t}": w for t, w in enumerate(within)}
    metrics |= {f"island/between_t{t}": b for t, b in enumerate(between)}
    for lvl in range(states.shape[1]):
        w, b = island_scores(states[-1, lvl], owner)
        metrics[f"island/within_level{lvl + 1}"], metrics[f"island/between_level{lvl + 1}"] = w.item(), b.item()
    n = len(images)
    tests = {"noise/acc_sigma_0.1": dict(pixel_noise=0.1), "noise/acc_sigma_0.3": dict(pixel_noise=0.3),
             "ood/acc_rotation_30_60": dict(rotation=(30.0, 60.0)), "ood/acc_scale_1.2_1.4": dict(scale=(1.2, 1.4))}
    rows = []
    for i, (key, options) in enumerate(tests.items()):
        extra = datamodule.generate(n, 3 + i, **options)
        s = states_of(module, extra.x)
        a = accuracy_per_step(module, s, extra.y)
        metrics[key], metrics[key.replace("/acc_", "/acc_t0_")] = a[-1], a[0]
        rows.append(f"| {key.split('/')[0]} | {', '.join(f'{k} {v}' for k, v in options.items())} | {a[0]:.3f} | "
                    f"{a[-1]:.3f} |")
    per_class = []
    pred = module.head.cpu()(states[-1, -1]).argmax(-1)
    module.head.to(module.device)
    for c, name in enumerate(CLASSES):
        keep = labels == c
        metrics[f"acc/class_{name}"] = (pred == labels)[keep].float().mean().item()
        per_class.append(f"{name} {metrics[f'acc/class_{name}']:.3f}")
    table = "\n".join([f"| test set | change | accuracy at t = 0 | accuracy at t = {T} |", "|---|---|---|---|",
                       f"| test | none | {accs[0]:.3f} | {accs[-1]:.3f} |", *rows])
    steps_table = "\n".join(["| t | accuracy | within-object cosine | between-object cosine |", "|---|---|---|---|",
                             *(f"| {t} | {accs[t]:.3f} | {within[t]:.3f} | {between[t]:.3f} |" for t in range(T + 1))])
    out: dict[str, Any] = {"metrics": metrics,
                           "tables": {"Accuracy and islands at each step (top level, test set)": steps_table,
                                      "Noise and unseen poses": table,
                                      "Accuracy per class at t = T": ", ".join(per_class)}}
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        pick = [int(i) for i in torch.linspace(0, n - 1, 8).round()]
        steps = sorted({0, 1, T // 2, T})
        out["figures"] = {
            "islands.png": island_figure(images[pick], states[:, :, pick], owner[pick] >= 0, steps, states.shape[1] - 1,
                                         module.net.grid[0], folder / "islands.png",
                                         "GLOM's top level on test images: one colour per embedding"),
            "settling.png": curve_figure({"accuracy": accs, "within-object cosine": within,
                                          "between-object cosine": between}, folder / "settling.png",
                                         "Read-out accuracy and island agreement at each step"),
        }
    return out


@torch.no_grad()
def pooled(states: torch.Tensor) -> torch.Tensor:
    """[T+1, L, n, N, d] -> [T+1, L, n, d]: each level's mean over columns."""
    return states.mean(3)


def analyse_denoise(module, datamodule, folder: Path | None, probe_train: int = 5000) -> dict[str, Any]:
    T, L = module.hparams.iterations, module.hparams.levels
    tr, va, te = datamodule.train_set, datamodule.val_set, datamodule.test_set
    sets = [tr.__getitems__(list(range(min(probe_train, len(tr))))), va.__getitems__(list(range(len(va)))),
            te.__getitems__(list(range(len(te))))]
    feats = [pooled(states_of(module, x)) for x, _ in sets]  # each [T+1, L, n, d]
    ys = [y for _, y in sets]
    C = datamodule.num_classes
    metrics: dict[str, float] = {}
    rows = []
    pixels = linear_probe(*(x.flatten(1).float() for x, _ in sets[:1]), ys[0], sets[1][0].flatten(1).float(), ys[1],
                          sets[2][0].flatten(1).float(), ys[2], C)["test_acc"]
    metrics["probe/pixels"] = pixels
    for lvl in range(L):
        accs = []
        for t in (0, T):
            r = linear_probe(feats[0][t, lvl], ys[0], feats[1][t, lvl], ys[1], feats[2][t, lvl], ys[2], C)
            metrics[f"probe/level{lvl + 1}_t{t}"] = r["test_acc"]
            accs.append(r["test_acc"])
        rows.append(f"| level {lvl + 1} | {accs[0]:.3f} | {accs[1]:.3f} |")
    x_test = sets[2][0][:500]
    s = states_of(module, x_test)  # [T+1, L, n, N, d]
    for lvl in range(L):
        for t in (0, T):
            u = F.normalize(s[t, lvl], dim=-1)
            cos = u @ u.transpose(1, 2)
            N = cos.shape[-1]
            metrics[f"island/within_image_level{lvl + 1}_t{t}"] = ((cos.sum((1, 2)) - N) / (N * (N - 1))).mean().item()
    table = "\n".join([f"| features | probe accuracy at t = 0 | at t = {T} |", "|---|---|---|",
                       f"| raw pixels | {pixels:.3f} | |", *rows])
    out: dict[str, Any] = {"metrics": metrics, "tables": {"Linear probe of each level's mean embedding (test)": table}}
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        plt = _pyplot()
        n = 8
        images = x_test[:n].to(module.device)
        blanked, mask = module.blank(images, torch.Generator().manual_seed(1234))
        recon = module.decode(module.net(blanked, T)[-1])
        grid = module.net.grid
        chans = module.hparams.in_chans
        filled = torch.where(mask[..., None], recon, patchify(images, module.hparams.patch))
        panels = [unpatchify(blanked, grid, chans), unpatchify(filled, grid, chans), images]
        fig, axes = plt.subplots(3, n, figsize=(1.4 * n, 4.4))
        for i, rowname in enumerate(("blanked", "filled in", "original")):
            for j in range(n):
                axes[i, j].imshow(panels[i][j].cpu().permute(1, 2, 0).squeeze(-1).clamp(0, 1), cmap="gray_r")
                axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            axes[i, 0].set_ylabel(rowname)
        out["figures"] = {"filled_in.png": _save(fig, folder / "filled_in.png",
                                                 f"GLOM fills in {module.hparams.mask_ratio:.0%} blanked patches"),
                          "islands.png": island_figure(x_test[:n], s[:, :, :n], torch.ones(n, s.shape[3], dtype=bool),
                                                       [0, T], L - 1, grid[0], folder / "islands.png",
                                                       "GLOM's top level on test images: one colour per embedding")}
    return out


@torch.no_grad()
def analyse(module, datamodule, folder: Path | None) -> dict[str, Any]:
    module.eval()
    datamodule.setup("test")
    if module.hparams.objective == "classify":
        return analyse_classify(module, datamodule, folder)
    return analyse_denoise(module, datamodule, folder)
