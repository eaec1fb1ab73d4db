"""Real MNIST / Fashion-MNIST images as 2-D solid shapes, for the shape papers (CvxNet's 2-D mode).

The shape of an image is its silhouette: the pixels brighter than `threshold`, with enclosed holes filled
(scipy.ndimage), a union of pixel squares. It sits in the box [-0.5, 0.5]², the 28 x 28 image spanning
[-`extent`, `extent`]², so there is empty space around every item; a point is inside exactly when the pixel
square containing it is (coordinates (x, y) = (column, row) direction, y pointing down as in the image).

Each training example draws new query points (as the official CvxNet samples 1024 box + 1024 near-surface points
per shape): `box_points` uniform in the box and `surface_points` uniform within the pixels on either side of the
boundary (the band where the occupancy changes), labelled exactly. Validation and test use one fixed
regular grid of `eval_grid`² points over the box for every shape, so IoU is measured the same way for every
model. Batches are (silhouette images [B, 1, 28, 28] in {0, 1}, points [B, N, 2], occupancy [B, N], class labels
[B]). Derived data: these are silhouettes of the real images, not a 2-D shape benchmark.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from zoo.data._base import batch_generator
from zoo.data.idx import IDXDataModule


def fill_silhouettes(images: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bool silhouettes [N, h, w] of uint8 images [N, 1, h, w] (or [N, h, w]): pixels > threshold·255, holes
    filled."""
    from scipy import ndimage

    x = images.reshape(-1, *images.shape[-2:]).numpy() > threshold * 255
    return torch.from_numpy(np.stack([ndimage.binary_fill_holes(m) for m in x]).reshape(x.shape))


def boundary_band(masks: torch.Tensor) -> torch.Tensor:
    """The pixels [N, h, w] whose 3 x 3 neighbourhood holds both inside and outside pixels (beyond the image is
    outside): the one-pixel band on either side of the boundary."""
    m = F.pad(masks.float(), (1, 1, 1, 1))[:, None]
    return (F.max_pool2d(m, 3, 1) + F.max_pool2d(-m, 3, 1))[:, 0] > 0


def occupancy(masks: torch.Tensor, points: torch.Tensor, extent: float) -> torch.Tensor:
    """Exact occupancy [B, N] in {0, 1} of points [B, N, 2] in silhouettes [B, h, w] spanning [-extent, extent]²."""
    B, h, w = masks.shape
    col = torch.floor((points[..., 0] + extent) / (2 * extent) * w).long()
    row = torch.floor((points[..., 1] + extent) / (2 * extent) * h).long()
    ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1))
    return (masks.reshape(B, -1).gather(1, flat) & ok).float()


def grid_points(n: int) -> torch.Tensor:
    """An n x n grid of cell centres over [-0.5, 0.5]², [n², 2] as (x, y), row-major."""
    t = (torch.arange(n) + 0.5) / n - 0.5
    y, x = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], -1)


class SilhouetteShapes(Dataset):
    """Silhouettes with their images and classes; `__getitems__` samples query points per batch (seeded by the
    batch's indices, so a rerun draws the same points) or returns the fixed evaluation grid."""

    def __init__(self, masks: torch.Tensor, labels: torch.Tensor, extent: float, box_points: int,
                 surface_points: int, eval_grid: int | None, seed: int):
        self.masks, self.labels, self.extent = masks, labels, extent
        self.box_points, self.surface_points, self.seed = box_points, surface_points, seed
        self.band = boundary_band(masks).reshape(len(masks), -1).float()
        self.grid = grid_points(eval_grid) if eval_grid else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, idx: list[int]):
        idx_t = torch.as_tensor(idx)
        masks = self.masks[idx_t]
        B, (h, w) = len(idx), masks.shape[1:]
        if self.grid is not None:
            points = self.grid.expand(B, -1, -1)
        else:
            g = batch_generator(self.seed, idx)
            box = torch.rand(B, self.box_points, 2, generator=g) - 0.5
            band = self.band[idx_t]
            band = torch.where(band.sum(1, keepdim=True) > 0, band, torch.ones_like(band))
            pix = torch.multinomial(band, self.surface_points, replacement=True, generator=g)
            cell = torch.stack([pix % w, pix // w], -1).float()
            inner = torch.rand(B, self.surface_points, 2, generator=g)
            near = (cell + inner) / torch.tensor([w, h]) * (2 * self.extent) - self.extent
            points = torch.cat([box, near], 1)
        images = masks[:, None].float()
        return images, points, occupancy(masks, points, self.extent), self.labels[idx_t]


class SilhouetteDataModule(IDXDataModule):
    """MNIST / Fashion-MNIST from their IDX files (zoo.data.idx) as silhouette shapes with occupancy samples.

    Args:
        dataset, data_dir, download, batch_size, val_size, seed, num_workers: as IDXDataModule (the validation
            images are carved from the training split; test is the official test split).
        threshold: a pixel is part of the shape above threshold·255 (before filling holes).
        extent: the image spans [-extent, extent]² inside the [-0.5, 0.5]² box.
        box_points, surface_points: training query points per shape (official: 1024 + 1024 in 3-D).
        eval_grid: validation and test points per side of the regular grid.
        test_size: the first `test_size` test images only (None: all 10,000).
    """

    def __init__(self, dataset: Literal["fashion-mnist", "mnist"] = "fashion-mnist", data_dir: str | None = None,
                 download: bool = True, batch_size: int = 32, val_size: int = 5000, seed: int = 0,
                 num_workers: int = 0, threshold: float = 0.1, extent: float = 0.4, box_points: int = 256,
                 surface_points: int = 256, eval_grid: int = 64, test_size: int | None = None):
        super().__init__(dataset=dataset, data_dir=data_dir, download=download, batch_size=batch_size,
                         val_size=val_size, seed=seed, num_workers=num_workers)
        if not 0 < extent <= 0.5:
            raise ValueError(f"extent must be in (0, 0.5] (the image inside the [-0.5, 0.5] box), got {extent}")
        if box_points < 0 or surface_points < 0 or box_points + surface_points == 0:
            raise ValueError("box_points and surface_points must be >= 0 and not both 0")
        self.threshold, self.extent = threshold, extent
        self.box_points, self.surface_points, self.eval_grid, self.test_size = (box_points, surface_points,
                                                                               eval_grid, test_size)
        self.dims = 2

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from zoo.data._base import split_off

        tx, ty, sx, sy = self.load_arrays()
        if self.test_size is not None:
            sx, sy = sx[:self.test_size], sy[:self.test_size]
        rest, held = split_off(len(ty), self.val_size, self.seed)
        tm, sm = fill_silhouettes(tx, self.threshold), fill_silhouettes(sx, self.threshold)

        def shapes(m, y, train):
            return SilhouetteShapes(m, y, self.extent, self.box_points, self.surface_points,
                                    None if train else self.eval_grid, self.seed)

        self.train_set = shapes(tm[rest], ty[rest], True)
        self.val_set = shapes(tm[held], ty[held], False)
        self.test_set = shapes(sm, sy, False)
