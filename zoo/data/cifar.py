"""CIFAR-10 from its official *binary* version (`cifar-10-binary.tar.gz`, folder `cifar-10-batches-bin`):
`data_batch_1.bin` ... `data_batch_5.bin` (50,000 training images) and `test_batch.bin` (10,000). Each record
is 1 label byte followed by 3,072 pixel bytes: the 1,024 red values of the 32 x 32 image row by row, then
the green, then the blue."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo.data._base import LocalImageData, data_folders, folder_with, locate

FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
RECORD = 1 + 3 * 32 * 32
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_cifar_bin(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR-10 binary batch file -> images uint8 [N, 3, 32, 32] and labels int64 [N]."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of {RECORD}-byte CIFAR-10 records")
    rows = raw.reshape(-1, RECORD)
    labels = rows[:, 0].astype(np.int64)
    if labels.max() >= len(CLASSES):
        raise ValueError(f"{path}: label {labels.max()} is not a CIFAR-10 class (0..9)")
    images = rows[:, 1:].reshape(-1, 3, 32, 32).copy()
    return torch.from_numpy(images), torch.from_numpy(labels)


class CIFAR10DataModule(LocalImageData):
    """CIFAR-10: the official 10,000-image test split, and a validation set carved from the 50,000 training
    images with a fixed seed; images are float [B, 3, 32, 32] in [0, 1].

    Looks for the binary batch files in `data_dir` (or `data_dir`/cifar-10-batches-bin), then in
    `$ZOO_HOME/data/cifar10/cifar-10-batches-bin`. Nothing is downloaded: the
    official archive publishes no checksum we could pin, and the zoo never uses an unverified download.
    """

    classes = CLASSES

    def locate(self) -> Path:
        """The folder holding all six batch files."""
        return locate(
            data_folders(self.data_dir, "cifar10", subfolder=FOLDER), folder_with(*TRAIN_FILES, TEST_FILE),
            f"CIFAR-10: the binary batch files ({', '.join(TRAIN_FILES)}, {TEST_FILE})",
            f"To get the data: download and unpack {URL} (the binary version, not the Python or Matlab one); "
            f"then pass --data.init_args.data_dir=DIR (the folder holding {FOLDER}).")

    def load_arrays(self):
        folder = self.locate()
        train = [read_cifar_bin(folder / f) for f in TRAIN_FILES]
        sx, sy = read_cifar_bin(folder / TEST_FILE)
        return torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), sx, sy
