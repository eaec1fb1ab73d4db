"""Tiny files in real image-dataset formats, drawn from real images (scikit-learn's digits and its two sample
photos): CIFAR-10's binary records and the ImageNet folder layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_cifar_bin(folder, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n real images in the official record layout: sklearn digits drawn 4x larger (32 x 32), the three
    colour planes told apart (red = digit, green = its transpose, blue = inverted)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.random.default_rng(seed).choice(len(d.target), n, replace=False)
    red = np.kron(d.images[idx], np.ones((4, 4))) * (255 / 16)
    img = np.stack([red, red.transpose(0, 2, 1), 255 - red], axis=1).round().astype(np.uint8)
    labels = d.target[idx].astype(np.uint8)
    records = np.concatenate([labels[:, None], img.reshape(n, -1)], axis=1)
    return img, labels, records.tobytes()


def write_image_folder(root: Path, per_class: int = 4) -> Path:
    """root/train/<class>/ and root/val/<class>/ holding crops of scikit-learn's two sample photos (classes
    "china" and "flower") as JPEG and PNG files of a few sizes, one of them grayscale; returns root."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = dict(zip(("china", "flower"), load_sample_images().images))
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for c, photo in photos.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                side = int(rng.integers(40, 90))
                y, x = (int(rng.integers(0, photo.shape[k] - side)) for k in (0, 1))
                crop = Image.fromarray(photo[y:y + side, x:x + side + 10])
                if i == 1:
                    crop = crop.convert("L")  # grayscale files become RGB when read
                crop.save(root / split / c / f"{c}_{split}_{i}.{'png' if i % 2 else 'jpg'}")
    return root
