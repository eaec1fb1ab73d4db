"""MNIST-family datasets in their original IDX format (LeCun's `*-idx3-ubyte[.gz]` files)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from zoo._paths import zoo_home
from zoo.data._base import ImageClassificationData, data_folders, locate

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DATASETS = {
    "fashion-mnist": {
        "system": ["/usr/share/datasets/fashion-mnist"],
        "torchvision": "FashionMNIST",
        "get": "apt-get install dataset-fashion-mnist (Debian/Ubuntu), or download the four files from "
               "https://github.com/zalandoresearch/fashion-mnist#get-the-data",
        "classes": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"),
    },
    "mnist": {
        "system": ["/usr/share/datasets/mnist"],
        "torchvision": "MNIST",
        "get": "download the four files from http://yann.lecun.com/exdb/mnist/ (or any mirror)",
        "classes": tuple(str(i) for i in range(10)),
    },
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (gzipped or not): magic 0,0,dtype,ndim; ndim big-endian uint32 sizes; data."""
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(shape))
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: header says {shape} but the file holds {len(raw) - offset} data bytes (truncated?)")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)


def _find(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in FILES.items():
        hit = next((folder / (stem + ext) for ext in ("", ".gz") if (folder / (stem + ext)).is_file()), None)
        if hit is None:
            return None
        found[key] = hit
    return found


class IDXDataModule(ImageClassificationData):
    """MNIST or Fashion-MNIST from the original IDX files: the official test split, and a validation set
    carved from the training split with a fixed seed.

    Looks in `data_dir`, then `$ZOO_HOME/data/<dataset>`, then system locations (Debian's
    dataset-fashion-mnist), then downloads through torchvision when `download` and the network allow.
    """

    def __init__(self, dataset: Literal["fashion-mnist", "mnist"] = "fashion-mnist", data_dir: str | None = None,
                 download: bool = True, batch_size: int = 100, val_size: int = 5000, seed: int = 0,
                 num_workers: int = 0):
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, num_workers=num_workers)
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        self.dataset, self.data_dir, self.download = dataset, data_dir, download
        self.classes = DATASETS[dataset]["classes"]

    def locate(self) -> dict[str, Path]:
        spec = DATASETS[self.dataset]
        return locate(
            data_folders(self.data_dir, self.dataset, *spec["system"], subfolder=f"{spec['torchvision']}/raw"), _find,
            f"{self.dataset}: the IDX files ({', '.join(FILES.values())}, optionally .gz)",
            f"{'A download was tried and failed (no network?). ' if self.download else 'Downloading is off (download=False). '}"
            f"To get the data: {spec['get']}; then pass --data.init_args.data_dir=DIR.")

    def prepare_data(self) -> None:
        try:
            self.locate()
        except FileNotFoundError:
            if not self.download:
                raise
            import torchvision

            root = zoo_home() / "data" / self.dataset
            try:
                getattr(torchvision.datasets, DATASETS[self.dataset]["torchvision"])(root, train=True, download=True)
                getattr(torchvision.datasets, DATASETS[self.dataset]["torchvision"])(root, train=False, download=True)
            except Exception:  # the error below says where we looked and how to get the files
                pass
            self.locate()

    def load_arrays(self):
        f = self.locate()
        arrays = [torch.from_numpy(read_idx(f[k]).copy()) for k in FILES]
        tx, ty, sx, sy = arrays
        return tx.unsqueeze(1), ty, sx.unsqueeze(1), sy
