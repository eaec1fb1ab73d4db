"""Photos in the ImageNet folder layout: `train/<class>/<image>` and `val/<class>/<image>` (the usual layout after
sorting ILSVRC-2012's validation images into class folders), classes named by their folders, sorted. JPEG, PNG,
WEBP and GIF files decode through Pillow (torchvision's dependency); grayscale and CMYK images become RGB; a file
that does not decode is an error naming it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

from zoo.data._base import InMemoryData, data_folders, locate

__all__ = ["ImageFiles", "ImageFolderData", "scan"]

EXTENSIONS = {".jpeg", ".jpg", ".png", ".webp", ".gif"}


def scan(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Image files under folder/<class>/ with their class indices; `classes` fixes the class list (the training
    split's) and a class folder it does not name is an error."""
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if classes is None:
        classes = found
    elif set(found) - set(classes):
        raise ValueError(f"{folder}: class folders {sorted(set(found) - set(classes))[:5]} are not in the "
                         f"training split's {len(classes)} classes")
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(p for p in (folder / c).glob("*") if p.suffix.lower() in EXTENSIONS) \
            if (folder / c).is_dir() else []
        paths += files
        labels += [i] * len(files)
    if not paths:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(sorted(EXTENSIONS))}) in class folders")
    return paths, labels, classes


class ImageFiles(Dataset):
    """(image, label) pairs read from disk: float RGB [3, H, W] in [0, 1], through `transform` when given;
    `__getitems__` stacks a batch (so `transform` must give one size)."""

    def __init__(self, paths: list[Path], labels: list[int], transform: Callable | None = None):
        self.paths, self.labels, self.transform = list(paths), torch.as_tensor(labels, dtype=torch.long), transform

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, keep: torch.Tensor) -> "ImageFiles":
        return ImageFiles([self.paths[i] for i in keep.tolist()], self.labels[keep].tolist(), self.transform)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        import numpy as np
        from PIL import Image

        path = self.paths[i]
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as e:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            raise ValueError(f"{path}: not a readable image ({e}); remove or replace the file") from None
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255
        return (self.transform(x) if self.transform else x), self.labels[i]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self[i] for i in idx]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


class ImageFolderData(InMemoryData):
    """ImageNet-layout photos (module docstring): the training split from train/, and val/ as both the validation
    and the test split (ImageNet's test labels are not public; the papers report on its validation set). Plain
    images for evaluation are resized so the short side is size / 0.875 and centre-cropped to size x size, the
    official evaluation crop.

    Args:
        data_dir: the folder holding train/ and val/ (or `$ZOO_HOME/data/<name>`).
        name: the dataset's name under `$ZOO_HOME/data`.
        size: the evaluation crop's side.
        subset_file: keep only the training images whose file names it lists, one per line (the official
            SimCLRv2 `imagenet_subsets/1percent.txt` and `10percent.txt`).
    """

    def __init__(self, data_dir: str | None = None, name: str = "imagenet", batch_size: int = 256, seed: int = 0,
                 num_workers: int = 8, size: int = 224, subset_file: str | None = None):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.data_dir, self.name, self.size, self.subset_file = data_dir, name, size, subset_file
        self.classes: tuple[str, ...] = ()

    def locate(self) -> Path:
        def both(folder: Path) -> Path | None:
            return folder if (folder / "train").is_dir() and (folder / "val").is_dir() else None

        return locate(data_folders(self.data_dir, self.name), both,
                      f"{self.name}: a folder with train/<class>/ and val/<class>/ image folders",
                      "Pass --data.init_args.data_dir=DIR (ImageNet: sort the validation images into class folders "
                      "first, as the usual valprep script does).")

    def prepare_data(self) -> None:
        self.locate()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from torchvision.transforms import v2

        root = self.locate()
        paths, labels, classes = scan(root / "train")
        self.classes = tuple(classes)
        train = ImageFiles(paths, labels)
        if self.subset_file:
            names = {line.strip() for line in Path(self.subset_file).read_text().splitlines() if line.strip()}
            keep = torch.tensor([i for i, p in enumerate(paths) if p.name in names], dtype=torch.long)
            if not len(keep):
                raise ValueError(f"{self.subset_file}: none of its {len(names)} file names is in {root / 'train'}")
            train = train.subset(keep)
        self.train_set = train
        evaluate = v2.Compose([v2.Resize(round(self.size / 0.875), antialias=True), v2.CenterCrop(self.size)])
        self.val_set = self.test_set = ImageFiles(*scan(root / "val", classes)[:2], transform=evaluate)
