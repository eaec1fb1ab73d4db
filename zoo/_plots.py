"""Figures for model cards, drawn headless with matplotlib."""
from __future__ import annotations

from pathlib import Path

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, title: str) -> Path:
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def weight_grid(images: torch.Tensor, path: Path, title: str = "", cols: int = 8) -> Path:
    """Save [N, H, W] tensors as a grid of images, each scaled symmetrically around zero."""
    plt = _pyplot()
    n = images.shape[0]
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.4))
    for ax, img in zip(axes.flat, images):
        lim = float(img.abs().max()) or 1.0
        ax.imshow(img.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    for ax in axes.flat:
        ax.axis("off")
    return _save(fig, path, title)


def score_table(images: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, classes: list[str], path: Path,
                title: str = "") -> Path:
    """Each row: an input image [H, W] and its score for every class as a heat strip; the true class is
    framed, and the row's winner is marked with a dot."""
    plt = _pyplot()
    n, c = scores.shape
    fig, axes = plt.subplots(n, 2, figsize=(1.0 + 0.45 * c, 0.6 * n + 0.8),
                             gridspec_kw={"width_ratios": [1, c / 1.6]}, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i].numpy(), cmap="gray_r")
        axes[i, 0].axis("off")
        row = scores[i : i + 1]
        axes[i, 1].imshow(((row - row.min()) / (row.max() - row.min() + 1e-12)).numpy(), cmap="viridis", aspect="auto")
        axes[i, 1].add_patch(plt.Rectangle((int(labels[i]) - 0.5, -0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        axes[i, 1].plot(int(row.argmax()), 0, "o", color="white", markersize=4)
        axes[i, 1].set_yticks([])
        axes[i, 1].set_xticks(range(c))
        axes[i, 1].set_xticklabels(classes if i == n - 1 else [], rotation=60, fontsize=7)
    return _save(fig, path, title)


def sample_grids(panels: dict[str, torch.Tensor], path: Path, title: str = "", nrow: int = 10) -> Path:
    """One grid of images [N, C, H, W] in [0, 1] per panel, side by side."""
    from torchvision.utils import make_grid

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for ax, (name, images) in zip(axes[0], panels.items()):
        grid = make_grid(images.float(), nrow=nrow, padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy().squeeze(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    return _save(fig, path, title)
