"""Tiny medical image sets in their releases' real layouts, shared by tests/test_pcam.py, tests/test_chexpert.py and
the REMEDIS recipes' fast_dev_run (tests/papers.py): PatchCamelyon's six HDF5 files (`x`: uint8 [N, 96, 96, 3], `y`:
uint8 [N, 1, 1, 1]) and a CheXpert-v1.0-small/ folder (train.csv, valid.csv and grey JPEGs under
train/patientN/studyM/)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data.chexpert import COMPETITION, OBSERVATIONS

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]


def write_pcam_split(folder: Path, split: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One split's two files: random patches, labels alternating 0, 1; returns the arrays written."""
    import h5py

    g = np.random.default_rng(seed)
    x = g.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
    with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
        f.create_dataset("x", data=x)
    with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
        f.create_dataset("y", data=y)
    return x, y


def write_pcam(folder: Path, sizes: dict[str, int] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate((sizes or {"train": 16, "valid": 4, "test": 4}).items()):
        write_pcam_split(folder, split, n, i)
    return folder


def chexpert_labels(**kv: str) -> list[str]:
    """A CSV row's 14 observation cells: given ones by name (spaces as underscores, lower case), the rest empty."""
    return [kv.get(o.replace(" ", "_").lower(), "") for o in OBSERVATIONS]


def write_chexpert_release(root: Path, rows_by_split: dict[str, list[tuple[int, str, list[str]]]]) -> Path:
    """root/CheXpert-v1.0-small/ with a CSV per split of (patient, view, observation cells) rows, each with its grey
    JPEG; returns the release folder."""
    release = root / "CheXpert-v1.0-small"
    release.mkdir(parents=True)
    for split, rows in rows_by_split.items():
        with open(release / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CHEXPERT_HEADER)
            for patient, view, labels in rows:
                path = f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study1/view1_{view.lower()}.jpg"
                image = root / path
                image.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((20, 24), 40 * patient % 256, np.uint8), "L").save(image)
                w.writerow([path, "Female", 50, view, "AP" if view == "Frontal" else "", *labels])
    return release


def write_chexpert(root: Path, patients: int = 12) -> Path:
    """A frontal and a lateral view per training patient; patient p is positive for the competition observation
    p mod 5 and uncertain (-1) for the next one, so every observation has positives; two validation studies.
    Returns root (the folder holding the release)."""
    def cells(p: int) -> list[str]:
        given = {COMPETITION[p % 5]: "1.0", COMPETITION[(p + 1) % 5]: "-1.0"}
        return [given.get(o, "") for o in OBSERVATIONS]

    write_chexpert_release(root, {
        "train": [(p, view, cells(p)) for p in range(1, patients + 1) for view in ("Frontal", "Lateral")],
        "valid": [(p, "Frontal", cells(p)) for p in (101, 102)]})
    return root
