"""Tiny medical image sets in their releases' real layouts, for the REMEDIS recipes' fast_dev_run: PatchCamelyon's
six HDF5 files (`x`: uint8 [N, 96, 96, 3], `y`: uint8 [N, 1, 1, 1]) and a CheXpert-v1.0-small/ folder (train.csv,
valid.csv and grey JPEGs under train/patientN/studyM/), every competition observation positive somewhere."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data.chexpert import COMPETITION, OBSERVATIONS


def write_pcam(folder: Path, sizes: dict[str, int] | None = None) -> Path:
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate((sizes or {"train": 16, "valid": 4, "test": 4}).items()):
        g = np.random.default_rng(i)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f.create_dataset("x", data=g.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8))
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f.create_dataset("y", data=(np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1))
    return folder


def write_chexpert(root: Path, patients: int = 12) -> Path:
    """root/CheXpert-v1.0-small/ with a frontal and a lateral view per training patient; patient p is positive for
    the competition observation p mod 5 and uncertain (-1) for the next one; two validation studies."""
    release = root / "CheXpert-v1.0-small"
    release.mkdir(parents=True)
    g = np.random.default_rng(0)
    for split, ids in (("train", range(1, patients + 1)), ("valid", (101, 102))):
        with open(release / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS])
            for p in ids:
                cells = {COMPETITION[p % 5]: "1.0", COMPETITION[(p + 1) % 5]: "-1.0"}
                for view in ("Frontal", "Lateral") if split == "train" else ("Frontal",):
                    path = f"CheXpert-v1.0-small/{split}/patient{p:05d}/study1/view1_{view.lower()}.jpg"
                    (root / path).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(g.integers(0, 256, (40, 36), dtype=np.uint8), "L").save(root / path)
                    w.writerow([path, "Female", 50, view, "AP" if view == "Frontal" else "",
                                *(cells.get(o, "") for o in OBSERVATIONS)])
    return root
