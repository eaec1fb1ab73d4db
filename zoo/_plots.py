"""Figures for model cards, drawn headless with matplotlib."""
from __future__ import annotations

from pathlib import Path

import torch


def weight_grid(images: torch.Tensor, path: Path, title: str = "", cols: int = 8) -> Path:
    """Save [N, H, W] tensors as a grid of images, each scaled symmetrically around zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.4))
    for ax, img in zip(axes.flat, images):
        lim = float(img.abs().max()) or 1.0
        ax.imshow(img.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
