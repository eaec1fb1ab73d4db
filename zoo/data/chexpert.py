"""CheXpert (Irvin et al. 2019): chest radiographs with 14 observations labelled from their reports; one of the
REMEDIS paper's in-domain data sets (chest X-ray).

The release's layout (`CheXpert-v1.0-small/` or the full-resolution `CheXpert-v1.0/`): `train.csv` and `valid.csv`
with the columns Path, Sex, Age, Frontal/Lateral, AP/PA and one column per observation, each 1 (positive), 0
(negative), -1 (uncertain) or empty (not mentioned); Path names the JPEG from the folder above the release
(`CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`). The official validation set (234 studies,
labelled by radiologists) is the test split here; validation is carved from the training patients with a fixed
seed, whole patients at a time, so no patient is on both sides.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import torch

from zoo.data._base import InMemoryData, data_folders, locate
from zoo.data.imagefolder import ImageFiles
from zoo.data.views import _TwoViewData

OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices")
# the five observations of the CheXpert competition (and of most papers reporting on it, REMEDIS included)
COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def read_labels(csv_path: Path, tasks: tuple[str, ...], uncertain: str, frontal_only: bool
                ) -> tuple[list[str], list[list[int]], list[str]]:
    """(image paths as the CSV gives them, 0/1 labels per task, patient ids) of one CheXpert CSV. Uncertain
    labels become 1 (`uncertain="ones"`, the paper's U-Ones) or 0 ("zeros", U-Zeros); unmentioned ones 0."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        missing = [c for c in ("Path", "Frontal/Lateral", *tasks) if c not in (rows.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: no column(s) {missing}; a CheXpert CSV has Path, Sex, Age, "
                             f"Frontal/Lateral, AP/PA and the observations {', '.join(OBSERVATIONS)}")
        paths, labels, patients = [], [], []
        for n, row in enumerate(rows, start=2):
            if frontal_only and row["Frontal/Lateral"] != "Frontal":
                continue
            values = []
            for t in tasks:
                v = row[t].strip()
                if v not in ("", "1.0", "0.0", "-1.0", "1", "0", "-1"):
                    raise ValueError(f"{csv_path}, line {n}: {t} is {v!r}; expected 1, 0, -1 or empty")
                value = float(v) if v else 0.0
                values.append(int(value == 1 or (value == -1 and uncertain == "ones")))
            parts = Path(row["Path"]).parts
            paths.append(row["Path"])
            labels.append(values)
            patients.append(next((p for p in parts if p.startswith("patient")), row["Path"]))
    if not paths:
        raise ValueError(f"{csv_path}: no {'frontal ' if frontal_only else ''}images listed")
    return paths, labels, patients


class CheXpertDataModule(InMemoryData):
    """CheXpert's radiographs as multi-label targets (one 0/1 per task), images resized to size x size, grey
    repeated into 3 channels so ImageNet-pretrained encoders take them, pixels in [0, 1].

    Args:
        data_dir: the folder holding `CheXpert-v1.0-small/` (or the release folder itself).
        tasks: the observations to predict (default: the competition's five).
        uncertain: "ones" or "zeros", what an uncertain (-1) label becomes.
        frontal_only: keep only frontal views (as most work on the data).
        size: the images' side after resizing.
        val_fraction: the share of training patients held out for validation, drawn with `seed`.
        batch_size, seed, num_workers: the loaders.
    """

    def __init__(self, data_dir: str | None = None, tasks: list[str] = list(COMPETITION),
                 uncertain: Literal["ones", "zeros"] = "ones", frontal_only: bool = True, size: int = 224,
                 val_fraction: float = 0.05, batch_size: int = 64, seed: int = 0, num_workers: int = 8):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if unknown := [t for t in tasks if t not in OBSERVATIONS]:
            raise ValueError(f"unknown CheXpert observation(s) {unknown}; choose from {', '.join(OBSERVATIONS)}")
        if uncertain not in ("ones", "zeros"):
            raise ValueError(f"uncertain={uncertain!r}: choose 'ones' (U-Ones) or 'zeros' (U-Zeros)")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction}: need 0 < fraction < 1")
        self.data_dir, self.tasks, self.uncertain, self.frontal_only = data_dir, tuple(tasks), uncertain, frontal_only
        self.size, self.val_fraction = size, val_fraction
        self.classes = self.tasks

    def locate(self) -> Path:
        def release(folder: Path) -> Path | None:
            for d in (folder, folder / "CheXpert-v1.0-small", folder / "CheXpert-v1.0"):
                if (d / "train.csv").is_file() and (d / "valid.csv").is_file():
                    return d
            return None

        return locate(data_folders(self.data_dir, "chexpert"), release,
                      "CheXpert's train.csv and valid.csv (CheXpert-v1.0-small/)",
                      "Request the data from Stanford ML Group (stanfordmlgroup.github.io/competitions/chexpert), "
                      "unpack it and pass --data.init_args.data_dir=DIR.")

    def prepare_data(self) -> None:
        self.locate()

    def _split(self, release: Path, name: str, transform) -> tuple[ImageFiles, list[str]]:
        paths, labels, patients = read_labels(release / f"{name}.csv", self.tasks, self.uncertain, self.frontal_only)
        root = release.parent
        files = [root / p if (root / p).is_file() else release / Path(*Path(p).parts[1:]) for p in paths]
        if missing := [str(f) for f in files if not f.is_file()]:
            raise FileNotFoundError(f"{release / (name + '.csv')} lists {len(missing)} image(s) that are not there, "
                                    f"e.g. {missing[0]}; is the release unpacked whole?")
        return ImageFiles(files, labels, transform), patients

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from torchvision.transforms import v2

        release = self.locate()
        resize = v2.Resize((self.size, self.size), antialias=True)
        train, patients = self._split(release, "train", resize)
        ids = sorted(set(patients))
        perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(self.seed))
        held = {ids[i] for i in perm[: max(1, round(self.val_fraction * len(ids)))].tolist()}
        if len(held) == len(ids):
            raise ValueError(f"{len(ids)} training patient(s): too few to hold out a validation split")
        in_val = torch.tensor([p in held for p in patients])
        self.train_set = train.subset(torch.nonzero(~in_val).flatten())
        self.val_set = train.subset(torch.nonzero(in_val).flatten())
        self.test_set = self._split(release, "valid", resize)[0]


class TwoViewCheXpertDataModule(_TwoViewData, CheXpertDataModule):
    """CheXpert for contrastive pre-training and fine-tuning (`zoo.data.views`): training batches are two SimCLR
    views of each radiograph (REMEDIS' in-domain self-supervised stage, with its radiology views: histogram
    equalisation and elastic deformation); validation and test stay plain, with their multi-label targets.

    Args:
        size: the side the images are resized to, and of the views cropped from them (REMEDIS: 448 for chest
            X-rays).
        strength, crop, color, blur, label_fraction: as `zoo.data.views.TwoViewIDXDataModule`; label_fraction keeps
            a seeded random share of the training images (`labelled_subset` on multi-label targets).
        flip, equalize, elastic, rotation: `SimCLRViews`' REMEDIS options.
        the rest: `CheXpertDataModule`.
    """

    def __init__(self, data_dir: str | None = None, tasks: list[str] = list(COMPETITION),
                 uncertain: Literal["ones", "zeros"] = "ones", frontal_only: bool = True, size: int = 448,
                 val_fraction: float = 0.05, batch_size: int = 64, seed: int = 0, num_workers: int = 8,
                 strength: float = 0.5, crop: bool = True, color: bool = True, blur: bool = False,
                 label_fraction: float = 1.0, flip: bool = True, equalize: float = 0.5, elastic: float = 0.0,
                 rotation: float = 0.0):
        super().__init__(data_dir=data_dir, tasks=tasks, uncertain=uncertain, frontal_only=frontal_only, size=size,
                         val_fraction=val_fraction, batch_size=batch_size, seed=seed, num_workers=num_workers)
        self._set_views(size, strength, crop, color, blur, label_fraction, flip=flip, equalize=equalize,
                        elastic=elastic, rotation=rotation)
