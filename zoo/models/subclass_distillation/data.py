"""The paper's "2x5" construction on an IDX dataset: the ten classes grouped into two superclasses of five
consecutive classes (0-4 and 5-9); models train on the superclass labels, the original labels are kept for
measuring how well learned subclasses recover them."""
from __future__ import annotations

from typing import Literal

import torch

from zoo.data import IDXDataModule
from zoo.data._base import ImageArrays


class SuperclassArrays(ImageArrays):
    """Images labelled with their superclass `fine // subclasses`; `fine_labels` keeps the original classes."""

    def __init__(self, images: torch.Tensor, fine_labels: torch.Tensor, scale: float, subclasses: int):
        super().__init__(images, fine_labels.long() // subclasses, scale)
        self.fine_labels = fine_labels.long()


class SuperclassIDXDataModule(IDXDataModule):
    """MNIST or Fashion-MNIST as C = 10 / `subclasses` superclasses of consecutive original classes: with 5,
    Fashion-MNIST-2x5 is {T-shirt/top, Trouser, Pullover, Dress, Coat} vs {Sandal, Shirt, Sneaker, Bag, Ankle boot}.

    Batches are (images, superclass labels), as for any classifier; each split's `fine_labels` holds the original
    labels in the split's order (the validation and test loaders do not shuffle), and `fine_classes` their names.
    """

    def __init__(self, dataset: Literal["fashion-mnist", "mnist"] = "fashion-mnist", data_dir: str | None = None,
                 download: bool = True, batch_size: int = 256, val_size: int = 5000, seed: int = 0,
                 num_workers: int = 0, subclasses: int = 5):
        super().__init__(dataset, data_dir, download, batch_size, val_size, seed, num_workers)
        if subclasses < 1 or 10 % subclasses:
            raise ValueError(f"subclasses must divide the 10 classes, got {subclasses}")
        self.subclasses = subclasses
        self.num_classes = 10 // subclasses
        self.fine_classes = self.classes
        self.classes = tuple(" | ".join(self.fine_classes[c * subclasses:(c + 1) * subclasses])
                             for c in range(self.num_classes))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        super().setup(stage)
        for split in ("train_set", "val_set", "test_set"):
            s = getattr(self, split)
            setattr(self, split, SuperclassArrays(s.images, s.labels, s.scale, self.subclasses))
