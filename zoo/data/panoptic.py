"""COCO panoptic segmentation in the official layout (`annotations/panoptic_<split>.json`, its PNGs in
`annotations/panoptic_<split>/`, images in `<split>/`), read as Pix2Seq-D trains on it (google-research/pix2seq
`tasks/panoptic_segmentation.py`, `data/transforms.py`, `configs/config_diffusion_panoptic_image.py`).

A PNG's pixel holds its segment's id as R + 256 G + 256² B (0: unlabelled); the JSON lists each image's segments with
their category and crowd flag. A target is the panoptic map's two integer channels: the semantic id (the COCO
category id; 0 void: unlabelled pixels and crowd segments) and the identity id (0 void; the image's other segments,
things and stuff alike, numbered 1..N in a random order redrawn at every training read, as the official reader
does, and in file order in evaluation).

Augmentation, in the official order: training scales the image so it fits `image_size` x s (s ~ U[min_scale,
max_scale], bilinear with antialiasing; the map nearest-neighbour), crops `image_size` at a random offset, flips
with probability 0.5, distorts colour (strength `color_jitter`), pads bottom/right (image 0.3, map 0) and resizes
the map (nearest) to `mask_size`; evaluation resizes to fit `image_size`, pads, and keeps the original-size map
beside the mask-size one for the metric.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from zoo.data.coco import (PAD_VALUE, COCOSplits, _listed_images, _random_offset, _resize, color_distort,
                           load_image)

HOW = ("Get COCO 2017 panoptic from https://cocodataset.org/#download (panoptic_annotations_trainval2017.zip, "
       "unpacking panoptic_<split>.zip inside it, and the train2017/val2017 images) so that DATA_DIR holds "
       "annotations/panoptic_<split>.json, annotations/panoptic_<split>/*.png and <split>/*.jpg; then pass "
       "--data.init_args.data_dir=DATA_DIR (or put it under $ZOO_HOME/data/coco).")


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG pixels [H, W, 3] uint8 -> segment ids [H, W] (R + 256 G + 256² B)."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """The inverse of `rgb_to_id`: segment ids [H, W] -> uint8 [H, W, 3]."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


def read_panoptic(annotation_file: str | Path, png_dir: str | Path, image_dir: str | Path
                  ) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]]]:
    """panoptic_<split>.json -> (one record per image in the file's order: `id`, `path`, `png`, `height`, `width`,
    `segments` [(segment id, category id, iscrowd)]; {category id: {"name", "isthing"}})."""
    annotation_file, png_dir, image_dir = Path(annotation_file), Path(png_dir), Path(image_dir)
    data = json.loads(annotation_file.read_text())
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{annotation_file} is not a COCO panoptic file: it has no {', '.join(missing)}")
    categories = {int(c["id"]): {"name": c["name"], "isthing": bool(c.get("isthing", 1))} for c in data["categories"]}
    if max(categories, default=0) >= 256:
        raise ValueError(f"{annotation_file}: category ids must be below 256 (8 semantic bits); the largest is "
                         f"{max(categories)}")
    images = _listed_images(data, annotation_file, image_dir)
    by_image: dict[int, dict] = {}
    for ann in data["annotations"]:
        if int(ann["image_id"]) not in images:
            raise ValueError(f"{annotation_file}: the annotation of {ann.get('file_name')} refers to image "
                             f"{ann['image_id']}, which is not in 'images'")
        if not (png_dir / ann["file_name"]).is_file():
            raise FileNotFoundError(f"the panoptic PNG {png_dir / ann['file_name']} is missing. {HOW}")
        for seg in ann["segments_info"]:
            if int(seg["category_id"]) not in categories:
                raise ValueError(f"{annotation_file}: segment {seg['id']} of {ann['file_name']} has category_id "
                                 f"{seg['category_id']}, not one of the listed categories")
        by_image[int(ann["image_id"])] = ann
    records = []
    for image_id, im in images.items():
        ann = by_image.get(image_id)
        if ann is None:
            raise ValueError(f"{annotation_file}: image {image_id} ({im['file_name']}) has no panoptic annotation")
        records.append({"id": image_id, "path": image_dir / im["file_name"], "png": png_dir / ann["file_name"],
                        "height": int(im["height"]), "width": int(im["width"]),
                        "segments": [(int(s["id"]), int(s["category_id"]), int(s.get("iscrowd", 0)))
                                     for s in ann["segments_info"]]})
    return records, categories


def panoptic_map(ids: np.ndarray, segments: list[tuple[int, int, int]], order: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Segment ids [H, W] -> [2, H, W] long (semantic, identity): crowd and unlisted segments void; identity k + 1
    for the k-th kept segment, or order[k] + 1 with a permutation `order` of the kept segments."""
    kept = [(sid, cat) for sid, cat, crowd in segments if not crowd]
    numbers = (order + 1).tolist() if order is not None else range(1, len(kept) + 1)
    lookup = {sid: (cat, k) for (sid, cat), k in zip(kept, numbers)}
    uniq, inverse = np.unique(ids, return_inverse=True)
    table = np.array([lookup.get(int(u), (0, 0)) for u in uniq], np.int64).reshape(-1, 2)
    return torch.from_numpy(table[inverse.reshape(ids.shape)].transpose(2, 0, 1).copy())


def _resize_map(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(label[None].float(), size=size, mode="nearest")[0].long()


class COCOPanoptic(Dataset):
    """One split: items are (image [3, S, S] in [0, 1], target) with target `panoptic` [2, m, m] (semantic, identity
    at mask size, padded frame), `image_id`, `orig_size`, `unpadded_size` and, in evaluation, `orig_panoptic`
    [2, H, W] (the map at the original size, what the metric compares with)."""

    def __init__(self, annotation_file: str | Path, png_dir: str | Path, image_dir: str | Path, image_size: int,
                 mask_size: int, train: bool, min_scale: float = 1.0, max_scale: float = 3.0,
                 color_jitter: float = 1.0, flip: bool = True):
        self.records, self.categories = read_panoptic(annotation_file, png_dir, image_dir)
        self.image_size, self.mask_size, self.train = image_size, mask_size, train
        self.min_scale, self.max_scale, self.color_jitter, self.flip = min_scale, max_scale, color_jitter, flip

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        r = self.records[i]
        image = load_image(r["path"])
        with Image.open(r["png"]) as png:
            ids = rgb_to_id(np.asarray(png.convert("RGB")))
        if ids.shape != tuple(image.shape[-2:]):
            raise ValueError(f"{r['png']} is {ids.shape[1]} x {ids.shape[0]} but its image {r['path']} is "
                             f"{image.shape[-1]} x {image.shape[-2]}")
        n = sum(1 for *_, crowd in r["segments"] if not crowd)
        label = panoptic_map(ids, r["segments"], torch.randperm(n) if self.train else None)
        h, w = image.shape[-2:]
        s = self.min_scale + (self.max_scale - self.min_scale) * float(torch.rand(())) if self.train else 1.0
        scale = min(self.image_size * s / h, self.image_size * s / w)
        size = (int(h * scale), int(w * scale)) if self.train else (round(h * scale), round(w * scale))
        image, resized = _resize(image, size, antialias=True), _resize_map(label, size)
        if self.train:
            top, left = _random_offset(image, self.image_size, None)
            image = image[:, top:top + self.image_size, left:left + self.image_size]
            resized = resized[:, top:top + self.image_size, left:left + self.image_size]
            if self.flip and float(torch.rand(())) > 0.5:
                image, resized = image.flip(-1), resized.flip(-1)
            if self.color_jitter > 0:
                image = color_distort(image, self.color_jitter)
        unpadded = torch.tensor(image.shape[-2:])
        pad = (0, self.image_size - image.shape[-1], 0, self.image_size - image.shape[-2])
        image, resized = F.pad(image, pad, value=PAD_VALUE), F.pad(resized, pad, value=0)
        target = {"panoptic": _resize_map(resized, (self.mask_size, self.mask_size)),
                  "image_id": torch.tensor(r["id"]), "orig_size": torch.tensor([h, w]), "unpadded_size": unpadded}
        if not self.train:
            target["orig_panoptic"] = label
        return image, target


class COCOPanopticDataModule(COCOSplits):
    """COCO-format panoptic data (see the module docstring).

    Args:
        data_dir: the folder holding `annotations/` and the image folders (also looked for in $ZOO_HOME/data/coco).
        train_split, val_split, test_split: split names; test_split None: the validation split is the test split.
        image_size, mask_size: the model input's and the mask's sides (paper: 1024 and 512).
        min_scale, max_scale, color_jitter: training augmentation (paper, low-resolution stage: 1-3 and 1.0).
        batch_size, eval_batch_size, num_workers, seed: loading (the training order is a function of seed and epoch).
    """

    annotation_file, how = "panoptic_{split}.json", HOW

    def __init__(self, data_dir: str | None = None, train_split: str = "train2017", val_split: str = "val2017",
                 test_split: str | None = None, image_size: int = 1024, mask_size: int = 512, min_scale: float = 1.0,
                 max_scale: float = 3.0, color_jitter: float = 1.0, batch_size: int = 16,
                 eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        if image_size % mask_size:
            raise ValueError(f"image_size {image_size} must be a multiple of mask_size {mask_size}")
        self.data_dir = data_dir
        self.splits = {"train": train_split, "val": val_split, "test": test_split or val_split}
        self.sets: dict[str, COCOPanoptic] = {}

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        for name, split in self.splits.items():
            if name not in self.sets:
                root = self.root(split)
                self.sets[name] = COCOPanoptic(
                    root / "annotations" / f"panoptic_{split}.json", root / "annotations" / f"panoptic_{split}",
                    root / split, hp.image_size, hp.mask_size, name == "train", hp.min_scale, hp.max_scale,
                    hp.color_jitter)

    @property
    def categories(self) -> dict[int, dict[str, Any]]:
        self.setup()
        return self.sets["train"].categories

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
