"""A tiny ShapeNet in the h5 layout Canonical Capsules' data_utils/ShapeNetLoader.py writes: two categories, six
training and two `valid` clouds of 100 points each (the second category shifted by +1 on every axis)."""
from __future__ import annotations

from pathlib import Path

import torch

CATEGORIES = ("02691156.h5", "03001627.h5")


def write_shapenet_h5(root: Path, train: int = 6, valid: int = 2) -> Path:
    import h5py

    folder = root / "ShapeNetAtlasNetH5"
    g = torch.Generator().manual_seed(0)
    for mode, n in (("train", train), ("valid", valid)):
        (folder / mode).mkdir(parents=True, exist_ok=True)
        (folder / f"{mode}_cat.txt").write_text("".join(f"{c}\n" for c in CATEGORIES))
        for j, name in enumerate(CATEGORIES):
            with h5py.File(folder / mode / name, "w") as f:
                points = f.create_group("pcd").create_group("point")
                for i in range(n):
                    points[str(i)] = (torch.rand(100, 3, generator=g) + j).numpy()
    return root
