"""Sample-quality measures for 2-D points and the model-card figures (sample grids, density panels)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from zoo._plots import _pyplot, _save

BANDWIDTHS = (0.5, 1.0, 2.0, 4.0)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = BANDWIDTHS) -> float:
    """Unbiased squared maximum mean discrepancy between point sets x [N, D] and y [M, D] under the sum of RBF
    kernels exp(−‖a − b‖² / 2ℓ²) over `bandwidths` ℓ."""
    x, y = x.double(), y.double()

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * ell**2)) for ell in bandwidths)

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return float((kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1))
                 - 2 * k(x, y).mean())


def tv_to_density(x: torch.Tensor, log_density: Callable[[torch.Tensor], torch.Tensor], limit: float = 10.0,
                  bins: int = 10, fine: int = 40) -> tuple[float, float]:
    """Total variation between the histogram of points x [N, 2] and a normalised 2-D density, on a bins x bins
    grid over [−limit, limit]² plus one bin for everything outside. The density's bin masses are midpoint sums
    on `fine` x `fine` points per bin. Also returns the expected TV of N exact draws (½ Σ √(2 p (1 − p) / πN)),
    the floor that sampling noise alone gives."""
    width = 2 * limit / bins
    centres = -limit + (torch.arange(bins * fine, dtype=torch.float64) + 0.5) * width / fine
    grid = torch.cartesian_prod(centres, centres)
    with torch.no_grad():
        dens = log_density(grid.float()).double().exp() * (width / fine) ** 2
    mass = dens.view(bins, fine, bins, fine).sum((1, 3)).flatten()
    p = torch.cat([mass, (1 - mass.sum()).clamp_min(0)[None]])
    inside = (x.abs() < limit).all(1)
    idx = ((x[inside].double() + limit) / width).floor().long().clamp(0, bins - 1)
    counts = torch.bincount(idx[:, 0] * bins + idx[:, 1], minlength=bins * bins).double()
    q = torch.cat([counts, (~inside).sum().double()[None]]) / len(x)
    floor = 0.5 * torch.sqrt(2 * p * (1 - p) / (math.pi * len(x))).sum()
    return float(0.5 * (p - q).abs().sum()), float(floor)


def density_panels(log_density: Callable[[torch.Tensor], torch.Tensor],
                   true_log_density: Callable[[torch.Tensor], torch.Tensor] | None, data: torch.Tensor,
                   samples: dict[str, torch.Tensor], path: Path, title: str = "", limit: float = 10.0,
                   n: int = 300) -> Path:
    """The data's density (when known), the model's density, and each sampler's points over the data."""
    plt = _pyplot()
    xs = torch.linspace(-limit, limit, n)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).view(-1, 2)
    maps = {"model density": log_density}
    if true_log_density is not None:
        maps = {"data density (the mixture)": true_log_density, **maps}
    cols = len(maps) + len(samples)
    fig, axes = plt.subplots(1, cols, figsize=(3.4 * cols, 3.6), squeeze=False)
    ext = [-limit, limit, -limit, limit]
    for ax, (name, f) in zip(axes[0], maps.items()):
        with torch.no_grad():
            img = f(grid).double().exp().view(n, n)
        ax.imshow(img.numpy(), extent=ext, origin="lower", cmap="viridis")
        ax.set_title(name, fontsize=9)
    for ax, (name, x) in zip(axes[0][len(maps):], samples.items()):
        ax.scatter(data[:, 0], data[:, 1], s=2, c="0.75", label="held-out data")
        ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:red", label="samples")
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_title(f"{name} samples", fontsize=9)
    axes[0][-1].legend(fontsize=7, loc="lower right", markerscale=4)
    return _save(fig, path, title)
