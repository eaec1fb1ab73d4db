"""COCO object detection in the official layout (`annotations/instances_<split>.json` + `<split>/` image folder),
with Pix2seq's image augmentation (Chen et al. 2022, arXiv 2109.10852; google-research/pix2seq
`configs/transform_configs.py` and `data/transforms.py`).

Boxes follow the official pipeline: COCO's pixel [x, y, w, h] become [ymin, xmin, ymax, xmax] normalised by the
image's height and width, and every transform keeps them normalised to the current image:
- training: scale jitter (the image resized, aspect kept, so that it fits `image_size` x s with s ~ U[0.3, 2.0],
  bilinear without antialiasing), a random `image_size` crop (boxes clipped to it), a horizontal flip with
  probability 0.5, removal of empty boxes and crowd annotations, and padding on the bottom/right with 0.3
  to `image_size` x `image_size`;
- evaluation: an aspect-preserving resize to fit `image_size` (antialiased), then the same padding.
Pixels are in [0, 1] with no mean/std normalisation. Images without annotations are skipped in training (as the
official code does); object order and the sequence's noise objects are the tokenizer's business, not the data's.

Bad input, and what is done with it: a missing folder, annotation file or image file, an annotation whose image or
category id is not listed, and a negative width or height are errors that say where; boxes reaching outside their
image are clipped to it (the official crop clips the same way), and boxes left with zero area stay in the
evaluation targets (COCO's evaluator judges them) but are removed from training targets.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from zoo.data._base import EpochSampler, data_folders, locate

PAD_VALUE = 0.3  # the official pad_image_to_max_size background
HOW = ("Get COCO 2017 from https://cocodataset.org/#download (annotations_trainval2017.zip, train2017.zip, "
       "val2017.zip) and unpack it so that DATA_DIR holds annotations/instances_<split>.json and <split>/*.jpg; "
       "then pass --data.init_args.data_dir=DATA_DIR (or put it under $ZOO_HOME/data/coco).")


def read_coco(annotation_file: str | Path, image_dir: str | Path) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """instances_<split>.json -> (one record per image, in the file's order; {category id: name}).

    A record holds `id`, `path`, `height`, `width` and the image's annotations as `boxes` [n, 4] (normalised
    [ymin, xmin, ymax, xmax], clipped to the image), `labels` [n] (COCO category ids), `iscrowd` [n] and `area` [n].
    """
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    data = json.loads(annotation_file.read_text())
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{annotation_file} is not a COCO instances file: it has no {', '.join(missing)}")
    categories = {int(c["id"]): c["name"] for c in data["categories"]}
    images = {int(im["id"]): im for im in data["images"]}
    absent = [im["file_name"] for im in data["images"] if not (image_dir / im["file_name"]).is_file()]
    if absent:
        raise FileNotFoundError(f"{len(absent)} of the {len(images)} images listed in {annotation_file} are not in "
                                f"{image_dir}, e.g. {', '.join(absent[:3])}. {HOW}")
    per_image: dict[int, list[dict]] = {i: [] for i in images}
    for ann in data["annotations"]:
        if int(ann["image_id"]) not in images:
            raise ValueError(f"{annotation_file}: annotation {ann.get('id')} refers to image {ann['image_id']}, "
                             "which is not in 'images'")
        if int(ann["category_id"]) not in categories:
            raise ValueError(f"{annotation_file}: annotation {ann.get('id')} has category_id {ann['category_id']}, "
                             f"not one of the listed categories {sorted(categories)}")
        if ann["bbox"][2] < 0 or ann["bbox"][3] < 0:
            raise ValueError(f"{annotation_file}: annotation {ann.get('id')} has a negative width or height: "
                             f"bbox {ann['bbox']} (COCO boxes are [x, y, width, height])")
        per_image[int(ann["image_id"])].append(ann)
    records = []
    for image_id, im in images.items():
        anns = per_image[image_id]
        h, w = float(im["height"]), float(im["width"])
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        yxyx = torch.stack([xywh[:, 1] / h, xywh[:, 0] / w, (xywh[:, 1] + xywh[:, 3]) / h,
                            (xywh[:, 0] + xywh[:, 2]) / w], 1).clamp(0, 1).float()
        records.append({"id": image_id, "path": image_dir / im["file_name"], "height": int(h), "width": int(w),
                        "boxes": yxyx, "labels": torch.tensor([int(a["category_id"]) for a in anns], dtype=torch.long),
                        "iscrowd": torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool),
                        "area": torch.tensor([float(a.get("area", 0.0)) for a in anns], dtype=torch.float32)})
    return records, categories


def load_image(path: str | Path) -> torch.Tensor:
    """An image file -> float [3, H, W] in [0, 1] (RGB; no mean/std normalisation, as in Pix2seq)."""
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255


def _resize(image: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    """Bilinear resize with half-pixel centres (tf.image.resize's bilinear method)."""
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=antialias)[0]


def scale_jitter(image: torch.Tensor, image_size: int, min_scale: float, max_scale: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Resize keeping the aspect ratio so the image fits a square of side image_size x s, s ~ U[min, max]
    (normalised boxes are unchanged)."""
    s = min_scale + (max_scale - min_scale) * torch.rand((), generator=generator).item()
    h, w = image.shape[-2:]
    scale = min(image_size * s / h, image_size * s / w)
    return _resize(image, (int(h * scale), int(w * scale)), antialias=False)


def crop(image: torch.Tensor, boxes: torch.Tensor, top: int, left: int, height: int, width: int
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The region [top:top+height, left:left+width], with the normalised boxes moved into it and clipped to it."""
    h, w = image.shape[-2:]
    height, width = min(height, h - top), min(width, w - left)
    offset = boxes.new_tensor([top / h, left / w] * 2)
    scale = boxes.new_tensor([h / height, w / width] * 2)
    return image[:, top:top + height, left:left + width], ((boxes - offset) * scale).clamp(0, 1)


def random_crop(image: torch.Tensor, boxes: torch.Tensor, image_size: int, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """An image_size x image_size crop at a uniformly random offset (the whole image where it is smaller)."""
    h, w = image.shape[-2:]
    u = torch.rand((), generator=generator).item()
    return crop(image, boxes, int(max(h - image_size, 0) * u), int(max(w - image_size, 0) * u), image_size, image_size)


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right: [ymin, xmin, ymax, xmax] -> [ymin, 1 - xmax, ymax, 1 - xmin]."""
    return image.flip(-1), torch.stack([boxes[:, 0], 1 - boxes[:, 3], boxes[:, 2], 1 - boxes[:, 1]], 1)


def pad_bottom_right(image: torch.Tensor, boxes: torch.Tensor, image_size: int, value: float = PAD_VALUE
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to image_size x image_size on the bottom and right with `value`; boxes renormalised to the padded image."""
    h, w = image.shape[-2:]
    out = F.pad(image, (0, image_size - w, 0, image_size - h), value=value)
    return out, boxes * boxes.new_tensor([h / image_size, w / image_size] * 2)


def train_transform(image: torch.Tensor, target: dict[str, torch.Tensor], image_size: int, min_scale: float = 0.3,
                    max_scale: float = 2.0, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pix2seq's training augmentation (official order): scale jitter, fixed-size crop, horizontal flip, removal of
    empty boxes and crowds, bottom/right padding."""
    image = scale_jitter(image, image_size, min_scale, max_scale, generator)
    image, boxes = random_crop(image, target["boxes"], image_size, generator)
    if torch.rand((), generator=generator).item() > 0.5:
        image, boxes = hflip(image, boxes)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & ~target["iscrowd"]
    unpadded = torch.tensor(image.shape[-2:])
    image, boxes = pad_bottom_right(image, boxes, image_size)
    out = {k: v[keep] for k, v in target.items() if k in ("labels", "iscrowd", "area")}
    return image, {**target, **out, "boxes": boxes[keep], "unpadded_size": unpadded}


def eval_transform(image: torch.Tensor, target: dict[str, torch.Tensor], image_size: int
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pix2seq's evaluation transform: an antialiased aspect-preserving resize to fit image_size (sizes rounded as
    tf.image.resize(preserve_aspect_ratio=True) rounds them), then bottom/right padding."""
    h, w = image.shape[-2:]
    scale = min(image_size / h, image_size / w)
    image = _resize(image, (round(h * scale), round(w * scale)), antialias=True)
    unpadded = torch.tensor(image.shape[-2:])
    image, boxes = pad_bottom_right(image, target["boxes"], image_size)
    return image, {**target, "boxes": boxes, "unpadded_size": unpadded}


def boxes_to_pixels(boxes: torch.Tensor, target: dict[str, torch.Tensor], image_size: int) -> torch.Tensor:
    """Normalised [ymin, xmin, ymax, xmax] in the padded model input -> [xmin, ymin, xmax, ymax] pixels of the
    original image (the official eval rescaling: padded size / unpadded size x original size)."""
    scale = image_size / target["unpadded_size"].to(boxes) * target["orig_size"].to(boxes)  # [h, w]
    yxyx = boxes * scale.repeat(2)
    return yxyx[..., [1, 0, 3, 2]]


class COCODetection(Dataset):
    """One split: items are (image [3, S, S] in [0, 1], target dict) after the training or evaluation transform.

    Target keys: `boxes` [n, 4] normalised [ymin, xmin, ymax, xmax] in the padded image, `labels` [n] (COCO category
    ids), `iscrowd` [n], `area` [n], `image_id`, `orig_size` [2] and `unpadded_size` [2] (height, width).
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, image_size: int, train: bool,
                 min_scale: float = 0.3, max_scale: float = 2.0):
        self.records, self.categories = read_coco(annotation_file, image_dir)
        if train:
            self.records = [r for r in self.records if len(r["labels"])]
        self.image_size, self.train, self.min_scale, self.max_scale = image_size, train, min_scale, max_scale

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        r = self.records[i]
        image = load_image(r["path"])
        target = {"boxes": r["boxes"], "labels": r["labels"], "iscrowd": r["iscrowd"], "area": r["area"],
                  "image_id": torch.tensor(r["id"]), "orig_size": torch.tensor(image.shape[-2:])}
        if self.train:
            return train_transform(image, target, self.image_size, self.min_scale, self.max_scale)
        return eval_transform(image, target, self.image_size)


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Images (all padded to the same square) stacked to [B, 3, S, S]; targets kept as a list of dicts."""
    return torch.stack([im for im, _ in batch]), [t for _, t in batch]


def _split_folder(split: str):
    return lambda folder: folder if (folder / "annotations" / f"instances_{split}.json").is_file() else None


class COCODetectionDataModule(L.LightningDataModule):
    """COCO-format detection data: `data_dir/annotations/instances_<split>.json` and `data_dir/<split>/` images.

    Args:
        data_dir: the folder holding `annotations/` and the image folders (also looked for in $ZOO_HOME/data/coco).
        train_split, val_split, test_split: split names (the file and folder stems); test_split None: the
            validation split is the test split too (COCO's test-dev has no public annotations).
        image_size: side of the square model input (official configs: 640, 1024 or 1333).
        min_scale, max_scale: the scale-jitter range (paper: 0.3 to 2.0).
        batch_size, eval_batch_size: images per training / evaluation batch (eval_batch_size None: batch_size).
        num_workers: DataLoader worker processes (image decoding and augmentation run there).
        seed: shuffling seed (the training order is a function of seed and epoch).
    """

    def __init__(self, data_dir: str | None = None, train_split: str = "train2017", val_split: str = "val2017",
                 test_split: str | None = None, image_size: int = 640, min_scale: float = 0.3, max_scale: float = 2.0,
                 batch_size: int = 32, eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.data_dir, self.image_size = data_dir, image_size
        self.splits = {"train": train_split, "val": val_split, "test": test_split or val_split}
        self.sets: dict[str, COCODetection] = {}

    def root(self, split: str) -> Path:
        """The folder holding `annotations/instances_<split>.json`, else a FileNotFoundError saying how to get it."""
        return locate(data_folders(self.data_dir, "coco"), _split_folder(split),
                      f"annotations/instances_{split}.json", HOW)

    def prepare_data(self) -> None:
        for split in dict.fromkeys(self.splits.values()):  # in order (a set's order changes with the hash seed)
            self.root(split)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        for name, split in self.splits.items():
            if name not in self.sets:
                root = self.root(split)
                image_dir = root / split
                if not image_dir.is_dir():
                    raise FileNotFoundError(f"the image folder {image_dir} is missing (it holds the images of "
                                            f"annotations/instances_{split}.json). {HOW}")
                self.sets[name] = COCODetection(root / "annotations" / f"instances_{split}.json", image_dir,
                                                self.image_size, name == "train", hp.min_scale, hp.max_scale)

    @property
    def categories(self) -> dict[int, str]:
        return self.sets["train"].categories if "train" in self.sets else {}

    def _loader(self, name: str) -> DataLoader:
        train = name == "train"
        ds = self.sets[name]
        hp = self.hparams
        return DataLoader(ds, batch_size=hp.batch_size if train else (hp.eval_batch_size or hp.batch_size),
                          sampler=EpochSampler(ds, hp.seed) if train else None, collate_fn=collate,
                          num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
