"""Tiny photos in the layout of the deepforest package's data folder (the four annotated photos, same names)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: stem -> (width, height, boxes as VOC xmin, ymin, xmax, ymax); one photo per split as the real data, small
PHOTOS = {
    "2019_YELL_2_528000_4978000_image_crop2": (25, 20, [(1, 1, 5, 6), (8, 2, 13, 7), (18, 12, 24, 19)]),
    "OSBS_029": (10, 10, [(2, 2, 6, 6)]),
    "2019_YELL_2_541000_4977000_image_crop": (15, 10, [(0, 0, 4, 4), (9, 3, 12, 9)]),
    "SOAP_061": (10, 10, [(1, 1, 3, 3), (5, 5, 9, 9)]),
}


def voc(filename: str, width: int, height: int, boxes: list[tuple], names: list[str] | None = None) -> str:
    """A Pascal-VOC annotation as the package writes them (size, one <object> with a <bndbox> per box)."""
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>" for b, n in zip(boxes, names or ["Tree"] * len(boxes)))
    return (f"<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{objects}</annotation>")


def write_treecrown_photos(dest: Path, scale: int = 1) -> Path:
    """The four photos (sides and boxes times `scale`) with random pixels in dest/deepforest/data; OSBS_029.xml
    names a .tif, as the package's does, beside its .png."""
    folder = Path(dest) / "deepforest" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, (w, h, boxes) in PHOTOS.items():
        name = f"{stem}.tif" if stem == "OSBS_029" else f"{stem}.png"
        names = ["Alive", "Dead"] if stem == "SOAP_061" else None
        scaled = [tuple(v * scale for v in b) for b in boxes]
        (folder / f"{stem}.xml").write_text(voc(name, w * scale, h * scale, scaled, names))
        Image.fromarray(rng.integers(0, 256, (h * scale, w * scale, 3), dtype=np.uint8)).save(folder / f"{stem}.png")
    return folder
