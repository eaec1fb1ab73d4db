"""CelebA (Liu et al. 2015), the aligned-and-cropped images, in the official layout: `img_align_celeba/*.jpg`
(202,599 JPEGs of 178 x 218 pixels) and `list_eval_partition.txt` (one "<file> <0|1|2>" line per image: train,
validation, test). Shrunk as GRBMs Without Tears' official code does for its CelebA-32 experiments: a central
140 x 140 crop resized to 32 x 32. Free for non-commercial research only (see the dataset's agreement)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo.data._base import ImageArrays, LocalImageData, data_folders, locate

IMAGES = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
SPLITS = {"train": 0, "val": 1, "test": 2}


def read_partition(path: str | Path) -> tuple[list[str], torch.Tensor]:
    """list_eval_partition.txt -> file names and their split (0 train, 1 validation, 2 test), in file order."""
    names, splits = [], []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}:{n}: expected '<image file> <0|1|2>', got {line!r}")
        names.append(parts[0])
        splits.append(int(parts[1]))
    return names, torch.tensor(splits)


def _celeba_folder(folder: Path) -> Path | None:
    return folder if (folder / PARTITION).is_file() and (folder / IMAGES).is_dir() else None


def load_celeba_image(path: str | Path, crop: int, size: int) -> np.ndarray:
    """One JPEG -> uint8 [3, size, size]: the central crop x crop square, resized with antialiasing (PIL's
    bilinear filter, as torchvision's Resize on PIL images)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if crop > min(w, h):
            raise ValueError(f"{path}: {w} x {h} pixels, smaller than the {crop} x {crop} crop")
        left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
        im = im.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BILINEAR)
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))


class CelebADataModule(LocalImageData):
    """CelebA images as float [B, 3, size, size] in [0, 1], with the official train/validation/test partition
    (162,770 / 19,867 / 19,962). CelebA has no classes: the label of every image is 0.

    Looks in `data_dir` (or `data_dir`/celeba, torchvision's layout), then `$ZOO_HOME/data/celeba`. Decoding the
    JPEGs takes minutes, so the resized images are cached once next to them as `celeba<size>_crop<crop>.safetensors`
    (plain arrays; rebuilt when the number of images changes). Nothing is downloaded: the dataset is behind a
    click-through agreement and publishes no checksum we could pin.
    """

    num_classes = 1
    classes = ("face",)

    def __init__(self, data_dir: str | None = None, crop: int = 140, size: int = 32, batch_size: int = 100,
                 seed: int = 0, num_workers: int = 0, cache: bool = True):
        super().__init__(data_dir, batch_size=batch_size, val_size=0, seed=seed, num_workers=num_workers)
        self.crop, self.size, self.cache = crop, size, cache

    def locate(self) -> Path:
        """The folder holding img_align_celeba/ and list_eval_partition.txt."""
        return locate(
            data_folders(self.data_dir, "celeba", subfolder="celeba"), _celeba_folder,
            f"CelebA: {IMAGES}/ and {PARTITION}",
            f"To get the data: download the aligned-and-cropped images (img_align_celeba.zip) and the evaluation "
            f"partition from {URL}, unpack them into one folder, then pass --data.init_args.data_dir=DIR.")

    def load_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as uint8 [N, 3, size, size] and their split [N], from the cache when it matches."""
        from safetensors.torch import load_file, save_file

        folder = self.locate()
        names, splits = read_partition(folder / PARTITION)
        cache = folder / f"celeba{self.size}_crop{self.crop}.safetensors"
        if self.cache and cache.is_file():
            arrays = load_file(cache)
            if arrays["images"].shape[0] == len(names) and torch.equal(arrays["splits"], splits):
                return arrays["images"], splits
        missing = [n for n in names if not (folder / IMAGES / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images listed in {PARTITION} are not in {folder / IMAGES} "
                                    f"(first: {missing[0]}); the folder is incomplete")
        from tqdm.auto import tqdm

        images = torch.from_numpy(np.stack([
            load_celeba_image(folder / IMAGES / n, self.crop, self.size)
            for n in tqdm(names, desc=f"CelebA: {self.crop} x {self.crop} crops to {self.size} x {self.size}",
                          mininterval=2.0)]))
        if self.cache:
            tmp = cache.with_suffix(".partial")
            save_file({"images": images, "splits": splits}, tmp)
            tmp.replace(cache)  # a crash never leaves a cache that looks complete
        return images, splits

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, splits = self.load_images()
        for name, code in SPLITS.items():
            x = images[splits == code]
            setattr(self, f"{name}_set", ImageArrays(x, torch.zeros(len(x), dtype=torch.long), self.scale))
