"""scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set, 1797 images): real data that
ships with a dependency, so recipes and tests run without any download."""
from __future__ import annotations

import torch

from zoo.data._base import ImageClassificationData, split_off


class DigitsDataModule(ImageClassificationData):
    """1797 digits, 8x8, values 0..16. There is no official split: a fixed-seed random split holds out
    `test_size` images for test and `val_size` of the rest for validation."""

    scale = 16.0
    classes = tuple(str(i) for i in range(10))

    def __init__(self, batch_size: int = 50, val_size: int = 180, test_size: int = 360, seed: int = 0,
                 num_workers: int = 0):
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, num_workers=num_workers)
        self.test_size = test_size

    def load_arrays(self):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.from_numpy(d.images.astype("uint8")).unsqueeze(1)
        y = torch.from_numpy(d.target)
        rest, test = split_off(len(y), self.test_size, self.seed + 1)
        return x[rest], y[rest], x[test], y[test]
