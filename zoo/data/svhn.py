"""SVHN (Netzer et al. 2011), the cropped-digits version, from its official MATLAB files `train_32x32.mat`
(73,257 images) and `test_32x32.mat` (26,032): each holds `X`, uint8 [32, 32, 3, N] (height, width, RGB,
image), and `y`, [N, 1] with labels 1..10, where 10 is the digit 0. Free for non-commercial use only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo.data._base import LocalImageData, data_folders, folder_with, locate

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
URL = "http://ufldl.stanford.edu/housenumbers/"
CLASSES = tuple(str(i) for i in range(10))


def read_svhn_mat(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One cropped-digits .mat file -> images uint8 [N, 3, 32, 32] and labels int64 [N] in 0..9."""
    from scipy.io import loadmat

    mat = loadmat(str(path))
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: not an SVHN cropped-digits file (no 'X' and 'y' arrays)")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise ValueError(f"{path}: X has shape {x.shape}, expected [32, 32, 3, {len(y)}]")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise ValueError(f"{path}: labels must be 1..10 (10 is the digit 0), found {y.min()}..{y.max()}")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8)
    return torch.from_numpy(images), torch.from_numpy(y % 10)


class SVHNDataModule(LocalImageData):
    """SVHN cropped digits: the official test split, and a validation set carved from the training file with a
    fixed seed (the `extra` file is not used); images are float [B, 3, 32, 32] in [0, 1].

    Looks for the .mat files in `data_dir`, then `$ZOO_HOME/data/svhn`. Nothing is downloaded: the official files
    publish no checksum we could pin, and the zoo never uses an unverified download.
    """

    classes = CLASSES

    def locate(self) -> Path:
        """The folder holding both .mat files."""
        return locate(
            data_folders(self.data_dir, "svhn"), folder_with(*FILES.values()),
            f"SVHN: {' and '.join(FILES.values())}",
            f"To get the data: download both files (format 2, cropped digits) from {URL}; "
            f"then pass --data.init_args.data_dir=DIR.")

    def load_arrays(self):
        folder = self.locate()
        tx, ty = read_svhn_mat(folder / FILES["train"])
        sx, sy = read_svhn_mat(folder / FILES["test"])
        return tx, ty, sx, sy
