"""PatchCamelyon (Veeling et al. 2018): 96 x 96 RGB patches of lymph-node sections, labelled 1 when the central
32 x 32 region holds tumour tissue; one of the REMEDIS paper's in-domain data sets (pathology).

The official release (github.com/basveeling/pcam) is six HDF5 files, one image and one label file per split:
`camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5` (gunzip the `.h5.gz` downloads), each holding one dataset
`x` (uint8, [N, 96, 96, 3]) or `y` (uint8, [N, 1, 1, 1]). The training split is 262,144 patches (7.2 GB), so
patches are read from the files per batch, never loaded whole; h5py is needed (`pip install h5py`).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from zoo.data._base import InMemoryData, data_folders, folder_with, locate
from zoo.data.views import _TwoViewData

SPLITS = {"train": "train", "val": "valid", "test": "test"}
SIZE = 96


def _file(split: str, part: str) -> str:
    return f"camelyonpatch_level_2_split_{split}_{part}.h5"


def _h5py():
    try:
        import h5py
    except ImportError as err:
        raise ImportError("reading PatchCamelyon's HDF5 files needs h5py: pip install h5py") from err
    return h5py


class PCamPatches(Dataset):
    """One split of PatchCamelyon read from its two HDF5 files: item i is (patch [3, 96, 96] in [0, 1], label).
    The image file is opened on first use in each process (DataLoader workers included); `__getitems__` reads a
    batch in one HDF5 selection of its distinct, sorted indices. The layout is checked when the split is built:
    an error names the file and what it holds."""

    classes = ("normal", "tumour")

    def __init__(self, x_path: str | Path, y_path: str | Path, keep: torch.Tensor | None = None):
        h5py = _h5py()
        self.x_path, self.y_path = Path(x_path), Path(y_path)
        with h5py.File(self.x_path, "r") as fx, h5py.File(self.y_path, "r") as fy:
            x, y = self._dataset(fx, "x", self.x_path), self._dataset(fy, "y", self.y_path)
            if x.ndim != 4 or tuple(x.shape[1:]) != (SIZE, SIZE, 3) or x.dtype != "uint8":
                raise ValueError(f"{self.x_path}: dataset 'x' is {x.dtype} {tuple(x.shape)}; PatchCamelyon patches "
                                 f"are uint8 [N, {SIZE}, {SIZE}, 3]")
            if len(y) != len(x):
                raise ValueError(f"{self.y_path} holds {len(y)} labels for the {len(x)} patches of {self.x_path}")
            labels = torch.from_numpy(y[:].reshape(len(y))).long()
        if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError(f"{self.y_path}: labels must be 0 (normal) or 1 (tumour), found "
                             f"{sorted(set(labels.unique().tolist()))[:5]}")
        self.keep = torch.arange(len(labels)) if keep is None else keep
        self.labels = labels[self.keep]
        self._files = None
        self.size = SIZE

    @staticmethod
    def _dataset(f, key: str, path: Path):
        if key not in f:
            raise KeyError(f"{path}: no dataset {key!r} (it holds {sorted(f.keys())}); PatchCamelyon's "
                           f"*_x.h5 files hold 'x' and *_y.h5 files 'y'. Is it the right file, gunzipped?")
        return f[key]

    def __len__(self) -> int:
        return len(self.keep)

    def _open(self):
        if self._files is None:
            h5py = _h5py()
            self._files = h5py.File(self.x_path, "r")["x"]
        return self._files

    def __getstate__(self) -> dict:  # open HDF5 handles do not cross into worker processes
        return {**self.__dict__, "_files": None}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows, back = self.keep[torch.as_tensor(idx)].unique(return_inverse=True)  # HDF5 reads increasing indices
        patches = torch.from_numpy(self._open()[rows.numpy()])[back].permute(0, 3, 1, 2).float() / 255.0
        if self.size != SIZE:
            patches = F.interpolate(patches, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                    antialias=True)
        return patches, self.labels[torch.as_tensor(idx)]

    def subset(self, keep: torch.Tensor) -> "PCamPatches":
        """The patches at indices `keep` of this split, without reading them."""
        out = object.__new__(PCamPatches)
        out.__dict__.update(self.__getstate__(), keep=self.keep[keep], labels=self.labels[keep])
        return out

    def resized(self, size: int) -> "PCamPatches":
        """This split with every patch resized to size x size when read (bilinear, antialiased)."""
        out = self.subset(torch.arange(len(self)))
        out.size = size
        return out


class PCamDataModule(InMemoryData):
    """PatchCamelyon's official train / valid / test splits from its HDF5 files, binary labels.

    Looks in `data_dir`, then `$ZOO_HOME/data/pcam`; the error says where it looked and how to get the files.

    Args:
        data_dir: the folder holding the six `camelyonpatch_level_2_split_*_{x,y}.h5` files.
        batch_size, seed, num_workers: the loaders (the training order is shuffled by seed and epoch).
    """

    classes = PCamPatches.classes
    num_classes = 2

    def __init__(self, data_dir: str | None = None, batch_size: int = 256, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.data_dir = data_dir

    def locate(self) -> Path:
        files = [_file(s, p) for s in SPLITS.values() for p in ("x", "y")]
        return locate(data_folders(self.data_dir, "pcam"), folder_with(*files),
                      "PatchCamelyon's HDF5 files (" + ", ".join(files) + ")",
                      "Download the six .h5.gz files of https://github.com/basveeling/pcam, gunzip them into one "
                      "folder and pass --data.init_args.data_dir=DIR (or put them in $ZOO_HOME/data/pcam).")

    def prepare_data(self) -> None:
        self.locate()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        root = self.locate()
        for attr, split in SPLITS.items():
            setattr(self, f"{attr}_set", PCamPatches(root / _file(split, "x"), root / _file(split, "y")))


class TwoViewPCamDataModule(_TwoViewData, PCamDataModule):
    """PatchCamelyon for contrastive pre-training and fine-tuning (`zoo.data.views`): training batches are two
    SimCLR views of each patch (REMEDIS' in-domain self-supervised stage); validation and test patches are
    resized to the views' `size` (the official evaluation resizes to the training size; it also centre-crops
    87.5% first, which is left out here).

    Args:
        size, strength, crop, color, blur, label_fraction: as `TwoViewIDXDataModule` (label_fraction keeps a
            class-balanced share of the labelled training patches, for the data-efficiency experiments).
        flip, equalize, elastic, rotation: REMEDIS' extra views (`zoo.data.views.SimCLRViews`; a section of
            tissue has no up or left, so flips and rotations keep its label).
        the rest: `PCamDataModule`.
    """

    def __init__(self, data_dir: str | None = None, batch_size: int = 256, seed: int = 0, num_workers: int = 0,
                 size: int = SIZE, strength: float = 1.0, crop: bool = True, color: bool = True, blur: bool = True,
                 label_fraction: float = 1.0, flip: bool = True, equalize: float = 0.0, elastic: float = 0.0,
                 rotation: float = 0.0):
        super().__init__(data_dir=data_dir, batch_size=batch_size, seed=seed, num_workers=num_workers)
        self._set_views(size, strength, crop, color, blur, label_fraction, flip=flip, equalize=equalize,
                        elastic=elastic, rotation=rotation)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        super().setup(stage)
        # evaluated at the views' size, as the official eval preprocessing resizes to the training image size
        self.val_set, self.test_set = self.val_set.resized(self.size), self.test_set.resized(self.size)
