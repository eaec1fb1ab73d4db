"""A tiny Extended Yale B in its cropped layout (CroppedYale/yaleBxx/yaleBxx_P00A±aaaE±ee.pgm): per subject, a
Lambertian sphere cap with its own albedo pattern under the same five lights, so photometric stereo has something
to recover."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LIGHTS = [(0, 0), (-20, 10), (25, -10), (40, 30), (-60, 0)]


def write_pgm(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)  # Pillow writes binary PGM (P5) for a .pgm name


def write_yaleb(folder: Path, subjects: int = 6, height: int = 14, width: int = 12) -> Path:
    root = folder / "CroppedYale"
    rng = np.random.default_rng(0)
    y, x = np.meshgrid(np.linspace(1, -1, height), np.linspace(-1, 1, width), indexing="ij")
    z = np.sqrt(np.clip(1.2 - x ** 2 - y ** 2, 0, None))
    n = np.stack([x, y, z], -1) / np.sqrt(1.2)
    for s in range(1, subjects + 1):
        albedo = 0.3 + 0.7 * rng.random((height, width))
        for a, e in LIGHTS:
            ar, er = np.radians(a), np.radians(e)
            light = np.array([np.cos(er) * np.sin(ar), np.sin(er), np.cos(er) * np.cos(ar)])
            img = np.clip(albedo * np.clip(n @ light, 0, None) * 255, 0, 255).round().astype(np.uint8)
            write_pgm(root / f"yaleB{s:02d}" / f"yaleB{s:02d}_P00A{a:+04d}E{e:+03d}.pgm", img)
    return folder
