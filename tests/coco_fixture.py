"""A tiny detection set in COCO's real file layout, for the COCO DataModule and Pix2seq tests: three images (two PNG,
one JPEG) on a grey background, each object a rectangle painted in its category's own colour, so a test can find
where an object's pixels went after any transform and compare with where its box went."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

#: category id -> (name, RGB); ids are sparse, as COCO's are
CATEGORIES = {1: ("red", (230, 20, 20)), 3: ("green", (20, 210, 40)), 7: ("blue", (30, 40, 235)),
              44: ("yellow", (240, 230, 20)), 90: ("magenta", (220, 30, 220))}
BACKGROUND = 128
#: file name, (height, width), [(category id, [x, y, w, h], iscrowd)]
IMAGES = (("000001.png", (48, 64), [(1, [4, 6, 20, 14], 0), (3, [34, 20, 26, 22], 0)]),
          ("000002.png", (64, 40), [(7, [2, 2, 16, 30], 0), (44, [22, 36, 14, 24], 0), (90, [20, 4, 18, 10], 1)]),
          ("000003.jpg", (40, 40), [(90, [10, 8, 22, 26], 0)]))


def write_coco_fixture(root: Path, splits: tuple[str, ...] = ("train2017", "val2017")) -> Path:
    """Write annotations/instances_<split>.json and <split>/ images (the same three images in every split)."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, (name, (h, w), objects) in enumerate(IMAGES, 1):
        pixels = np.full((h, w, 3), BACKGROUND, np.uint8)
        for category, (x, y, bw, bh), crowd in objects:
            pixels[y:y + bh, x:x + bw] = CATEGORIES[category][1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": crowd})
        images.append({"id": image_id, "file_name": name, "height": h, "width": w, "pixels": pixels})
    categories = [{"id": c, "name": n, "supercategory": "colour"} for c, (n, _) in CATEGORIES.items()]
    for split in splits:
        (root / split).mkdir(exist_ok=True)
        for im in images:
            Image.fromarray(im["pixels"]).save(root / split / im["file_name"], quality=95)
        listed = [{k: v for k, v in im.items() if k != "pixels"} for im in images]
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": listed, "annotations": annotations, "categories": categories}))
    return root
