"""scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set, 1797 images): real data that
ships with a dependency, so recipes and tests run without any download."""
from __future__ import annotations

import torch

from zoo.data._base import ImageClassificationData, split_off


class DigitsDataModule(ImageClassificationData):
    """1797 digits, 8x8, values 0..16. There is no official split: a fixed-seed random split holds out
    `test_size` images for test and `val_size` of the rest for validation.

    `size=28` draws each digit three times larger (every pixel a 3x3 block) in the middle of a 28x28 canvas, as
    MNIST centres its digits in 20x20 of 28x28: the same task from another source (other writers, scanned at
    8x8 by UCI), a distribution shift for networks trained on MNIST."""

    scale = 16.0
    classes = tuple(str(i) for i in range(10))

    def __init__(self, batch_size: int = 50, val_size: int = 180, test_size: int = 360, seed: int = 0,
                 num_workers: int = 0, size: int = 8):
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, num_workers=num_workers)
        if size not in (8, 28):
            raise ValueError(f"size={size}: the digits come as 8x8 or drawn on a 28x28 canvas (28)")
        self.test_size, self.size = test_size, size

    def load_arrays(self):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.from_numpy(d.images.astype("uint8")).unsqueeze(1)
        if self.size == 28:
            x = torch.nn.functional.pad(x.repeat_interleave(3, 2).repeat_interleave(3, 3), (2, 2, 2, 2))
        y = torch.from_numpy(d.target)
        rest, test = split_off(len(y), self.test_size, self.seed + 1)
        return x[rest], y[rest], x[test], y[test]
