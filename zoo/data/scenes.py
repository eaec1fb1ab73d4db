"""Derived detection scenes: real Fashion-MNIST (or MNIST) objects composed on a canvas, written as a COCO-layout
dataset (annotations/instances_<split>.json + PNG images). Not COCO and not Fashion-MNIST itself: a dataset derived
from the real images, for detection recipes that must train offline on 2 CPU cores.

Each scene is a `canvas` x `canvas` RGB image:
- background: dark noise plus clutter, low-contrast fragments of other images of the same source split, which are
  not objects (a detector must tell parts from wholes);
- 1 to `max_objects` objects: an image cropped to its ink, scaled so its longer side is log-uniform in
  [min_size, max_size] (a 4x scale range by default), tinted with a random colour and pasted with its intensity
  as opacity, later objects in front. A placement is redrawn while its box overlaps an earlier one by IoU above
  `max_iou` or would hide more than half of an earlier object's visible pixels.
Annotations are exact: the box is the object's ink box as pasted (amodal: its full extent, occluded or not), the
mask its visible ink (uncompressed COCO RLE), `area` the visible pixel count, the category the source label
(ids 1-10). Train scenes draw objects from the source's training images except its last `val_pool` images, which
feed the validation scenes; test scenes use the source's test images only, so no image is shared between splits.
The whole dataset is a function of its arguments and `seed`.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data._base import build_once
from zoo.data.coco import COCODetectionDataModule


def coco_rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE of a boolean [H, W] mask: run lengths over the column-major pixels, zeros first."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _ink(image: np.ndarray) -> np.ndarray:
    """A 28 x 28 source image cropped to the rows and columns holding ink, as opacity in [0, 1]."""
    rows, cols = np.flatnonzero(image.max(1) > 20), np.flatnonzero(image.max(0) > 20)
    if rows.size == 0:
        return image.astype(np.float32) / 255
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32) / 255


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated random colour (a hue on the colour wheel, brightness 0.7 to 1)."""
    h = rng.uniform(0, 6)
    x = 1 - abs(h % 2 - 1)
    rgb = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(h)]
    return np.array(rgb, np.float32) * rng.uniform(0.7, 1.0) * 0.8 + 0.2


def _resize(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(alpha).resize((width, height), Image.BILINEAR), np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iy = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ix = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iy * ix
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def render_scene(pool: np.ndarray, labels: np.ndarray, rng: np.random.Generator, canvas: int = 128,
                 max_objects: int = 8, min_size: int = 16, max_size: int = 64, max_iou: float = 0.5,
                 clutter: int = 6) -> tuple[np.ndarray, list[dict]]:
    """One scene from source images `pool` [N, 28, 28] uint8 with `labels` [N] -> (uint8 [canvas, canvas, 3],
    objects as {box: [y0, x0, y1, x1] pixels, label, mask: bool [canvas, canvas]})."""
    image = rng.uniform(0, 0.12, (canvas, canvas, 1)).astype(np.float32).repeat(3, 2)
    for _ in range(clutter):  # fragments of other images: texture, never objects
        src = pool[rng.integers(len(pool))]
        y, x, s = rng.integers(0, 20), rng.integers(0, 20), int(rng.integers(6, 10))
        frag = src[y:y + s, x:x + s]
        side = int(rng.integers(8, 24))
        alpha = _resize(frag, side, side)[..., None] / 255 * rng.uniform(0.2, 0.45)
        top, left = rng.integers(0, canvas - side + 1, 2)
        region = image[top:top + side, left:left + side]
        region[:] = region * (1 - alpha) + alpha * _colour(rng)
    objects: list[dict] = []
    visible = np.zeros((0, canvas, canvas), bool)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            i = int(rng.integers(len(pool)))
            ink = _ink(pool[i])
            longer = math.exp(rng.uniform(math.log(min_size), math.log(max_size)))
            scale = longer / max(ink.shape)
            h, w = max(2, round(ink.shape[0] * scale)), max(2, round(ink.shape[1] * scale))
            top, left = int(rng.integers(0, canvas - h + 1)), int(rng.integers(0, canvas - w + 1))
            alpha = _resize((ink * 255).astype(np.uint8), h, w) / 255
            mask = np.zeros((canvas, canvas), bool)
            mask[top:top + h, left:left + w] = alpha > 0.1
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            box = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float32)
            if any(_iou(box, o["box"]) > max_iou for o in objects):
                continue
            shown = visible.sum((1, 2))
            if len(objects) and ((shown - (visible & mask[None]).sum((1, 2))) < 0.5 * shown).any():
                continue
            break
        else:
            continue
        region = image[top:top + h, left:left + w]
        region[:] = region * (1 - alpha[..., None]) + alpha[..., None] * _colour(rng)
        visible = np.concatenate([visible & ~mask[None], mask[None]])
        objects.append({"box": box, "label": int(labels[i]), "mask": mask})
    for o, m in zip(objects, visible):
        o["mask"] = m
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), objects


def write_scenes(out_dir: str | Path, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                 test_labels: np.ndarray, class_names: tuple[str, ...], sizes: dict[str, int], val_pool: int = 5000,
                 seed: int = 0, **render) -> Path:
    """Write the splits of `sizes` ({"train": n, "val": n, "test": n}) under out_dir in the COCO layout; the
    folder is complete only once `done` exists (a crash leaves no folder that looks finished)."""
    out = Path(out_dir)
    if not 0 < val_pool < len(train_images):
        raise ValueError(f"val_pool {val_pool} must leave training images for the training scenes "
                         f"(the source has {len(train_images)})")
    pools = {"train": (train_images[:-val_pool], train_labels[:-val_pool]),
             "val": (train_images[-val_pool:], train_labels[-val_pool:]), "test": (test_images, test_labels)}
    categories = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(class_names)]
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for k, (split, n) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, k])
        pool, labels = pools[split]
        (out / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for i in range(n):
            pixels, objects = render_scene(pool, labels, rng, **render)
            name = f"{i:06d}.png"
            Image.fromarray(pixels).save(out / split / name, optimize=False)
            images.append({"id": i + 1, "file_name": name, "height": pixels.shape[0], "width": pixels.shape[1]})
            for o in objects:
                y0, x0, y1, x1 = (float(v) for v in o["box"])
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": o["label"] + 1,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(o["mask"].sum()),
                                    "iscrowd": 0, "segmentation": coco_rle(o["mask"])})
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"info": {"description": "derived scenes of real images (zoo.data.scenes); not COCO"},
             "images": images, "annotations": annotations, "categories": categories}))
    (out / "done").touch()
    return out


class SceneDetectionDataModule(COCODetectionDataModule):
    """Detection on derived scenes of real Fashion-MNIST (or MNIST) objects (see the module docstring), generated on
    first use into $ZOO_HOME/data/scenes/<name>-<hash of the arguments> and then read as COCO with Pix2seq's
    augmentation (`COCODetectionDataModule`).

    Args:
        source: "fashion-mnist" (the IDX files, `apt-get install dataset-fashion-mnist`) or "mnist".
        source_dir: where the source's IDX files are (default: the usual places, see zoo.data.IDXDataModule).
        train_size, val_size, test_size: scenes per split.
        val_pool: the last val_pool training images of the source make the validation scenes' objects.
        canvas, max_objects, min_size, max_size, max_iou, clutter: the scenes (see `render_scene`).
        scene_seed: the seed the scenes are drawn with.
        image_size ... seed: as `COCODetectionDataModule` (image_size defaults to the canvas).
    """

    def __init__(self, source: str = "fashion-mnist", source_dir: str | None = None, train_size: int = 8000,
                 val_size: int = 500, test_size: int = 1000, val_pool: int = 5000, canvas: int = 128,
                 max_objects: int = 8, min_size: int = 16, max_size: int = 64, max_iou: float = 0.5, clutter: int = 6,
                 scene_seed: int = 0,
                 image_size: int = 128, min_scale: float = 0.3, max_scale: float = 2.0, batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0):
        self.scene_args = {"source": source, "train": train_size, "val": val_size, "test": test_size,
                           "val_pool": val_pool, "canvas": canvas, "max_objects": max_objects, "min_size": min_size,
                           "max_size": max_size, "max_iou": max_iou, "clutter": clutter, "seed": scene_seed}
        super().__init__(None, "train", "val", "test", image_size, min_scale, max_scale, batch_size, eval_batch_size,
                         num_workers, seed)
        self.save_hyperparameters()
        self.source_dir = source_dir

    @property
    def scene_dir(self) -> Path:
        from zoo._paths import zoo_home

        key = hashlib.sha256(json.dumps(self.scene_args, sort_keys=True).encode()).hexdigest()[:12]
        return zoo_home() / "data" / "scenes" / f"{self.scene_args['source']}-{key}"

    def prepare_data(self) -> None:
        from zoo.data.idx import DATASETS, IDXDataModule, read_idx

        folder, a = self.scene_dir, self.scene_args

        def write(tmp: Path) -> None:
            files = IDXDataModule(a["source"], data_dir=self.source_dir).locate()
            write_scenes(tmp, read_idx(files["train_images"]), read_idx(files["train_labels"]),
                         read_idx(files["test_images"]), read_idx(files["test_labels"]),
                         DATASETS[a["source"]]["classes"], {"train": a["train"], "val": a["val"], "test": a["test"]}, val_pool=a["val_pool"],
                         seed=a["seed"], canvas=a["canvas"], max_objects=a["max_objects"], min_size=a["min_size"],
                         max_size=a["max_size"], max_iou=a["max_iou"], clutter=a["clutter"])

        build_once(folder, write)
        self.data_dir = str(folder)
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if not (self.scene_dir / "done").is_file():  # used without a Trainer (which calls prepare_data first)
            self.prepare_data()
        self.data_dir = str(self.scene_dir)
        super().setup(stage)
