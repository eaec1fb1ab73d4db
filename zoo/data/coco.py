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

Pix2seq v2's instance tasks also read points (`read_coco(points=...)`): an object's polygons ("polygon": COCO's
[x1, y1, x2, y2, ...] lists as y, x pairs normalised like the boxes, polygons joined by a separator pair (-2, -2),
truncated to `max_points` points and padded with -1, as the official TFRecords store them) and its keypoints
("keypoints": COCO's [x, y, v] triples as y, x pairs, an unlabelled one (v = 0) as the invisible pair (-3, -3)).
The transforms move every point that is not one of these reserved values with the image: crops clip polygon points
to the image and turn keypoints that leave it invisible, flips mirror x, padding rescales them. Keypoint examples
are not flipped (the official keypoint config leaves the flip out, since a flip must also swap left and right
joints). `COCOInstances` makes one example per object with the image cropped to the object's box (the official
`crop_to_bbox`, used for keypoints). Captioning reads COCO's captions files (`read_captions`: captions_<split>.json,
every caption of each image) and trains with the official captioning augmentation: the detection one plus, before
the padding, SimCLR's colour distortion of strength `color_jitter` (official 0.5; `COCOCaptions`).

Bad input, and what is done with it: a missing folder, annotation file or image file, an annotation whose image or
category id is not listed, and a negative width or height are errors that say where; boxes reaching outside their
image are clipped to it (the official crop clips the same way), and boxes left with zero area stay in the
evaluation targets (COCO's evaluator judges them) but are removed from training targets.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from zoo.data._base import EpochSampler, data_folders, locate
from zoo.data.augment import color_distortion

PAD_VALUE = 0.3  # the official pad_image_to_max_size background
HOW = ("Get COCO 2017 from https://cocodataset.org/#download (annotations_trainval2017.zip, train2017.zip, "
       "val2017.zip) and unpack it so that DATA_DIR holds annotations/instances_<split>.json and <split>/*.jpg; "
       "then pass --data.init_args.data_dir=DATA_DIR (or put it under $ZOO_HOME/data/coco).")


PADDING_FLOAT, SEPARATOR_FLOAT, INVISIBLE_FLOAT = -1.0, -2.0, -3.0  # reserved point values (official vocab.py)


def _polygon_points(ann: dict, h: float, w: float, max_points: int) -> list[float]:
    """An annotation's polygons as normalised y, x values with separator pairs, truncated to max_points points and
    padded with PADDING_FLOAT (no polygon: a crowd, an RLE mask or none)."""
    seg = ann.get("segmentation")
    flat: list[float] = []
    if isinstance(seg, list) and not ann.get("iscrowd", 0):
        for i, poly in enumerate(seg):
            if i:
                flat += [SEPARATOR_FLOAT, SEPARATOR_FLOAT]
            for x, y in zip(poly[0::2], poly[1::2]):
                flat += [y / h, x / w]
    flat = flat[:2 * max_points]
    return flat + [PADDING_FLOAT] * (2 * max_points - len(flat))


def _keypoint_points(ann: dict, h: float, w: float, num_keypoints: int) -> list[float]:
    """COCO's [x, y, v] triples as normalised y, x pairs; v = 0 (not labelled) as the invisible pair; an annotation
    without keypoints as padding."""
    kp = ann.get("keypoints")
    if not kp:
        return [PADDING_FLOAT] * (2 * num_keypoints)
    if len(kp) != 3 * num_keypoints:
        raise ValueError(f"annotation {ann.get('id')} has {len(kp) // 3} keypoints; its category lists {num_keypoints}")
    out: list[float] = []
    for x, y, v in zip(kp[0::3], kp[1::3], kp[2::3]):
        out += [INVISIBLE_FLOAT, INVISIBLE_FLOAT] if v == 0 else [y / h, x / w]
    return out


def _listed_images(data: dict, annotation_file: Path, image_dir: Path) -> dict[int, dict]:
    """{id: image record} of an annotation file whose every listed image exists in image_dir (else an error)."""
    images = {int(im["id"]): im for im in data["images"]}
    absent = [im["file_name"] for im in data["images"] if not (image_dir / im["file_name"]).is_file()]
    if absent:
        raise FileNotFoundError(f"{len(absent)} of the {len(images)} images listed in {annotation_file} are not in "
                                f"{image_dir}, e.g. {', '.join(absent[:3])}. {HOW}")
    return images


def _check_image_id(ann: dict, images: dict[int, dict], annotation_file: Path) -> None:
    if int(ann["image_id"]) not in images:
        raise ValueError(f"{annotation_file}: annotation {ann.get('id')} refers to image {ann['image_id']}, which "
                         "is not in 'images'")


def read_coco(annotation_file: str | Path, image_dir: str | Path, points: tuple[str, ...] = (), max_points: int = 128
              ) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """instances_<split>.json -> (one record per image, in the file's order; {category id: name}).

    A record holds `id`, `path`, `height`, `width` and the image's annotations as `boxes` [n, 4] (normalised
    [ymin, xmin, ymax, xmax], clipped to the image), `labels` [n] (COCO category ids), `iscrowd` [n] and `area` [n];
    with "polygon" in `points` also `polygon` [n, 2 max_points], with "keypoints" `keypoints` [n, 2 K] and
    `num_keypoints` [n] (K: the categories' keypoint count; see the module docstring for the layout).
    """
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    data = json.loads(annotation_file.read_text())
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{annotation_file} is not a COCO instances file: it has no {', '.join(missing)}")
    categories = {int(c["id"]): c["name"] for c in data["categories"]}
    unknown = set(points) - {"polygon", "keypoints"}
    if unknown:
        raise ValueError(f"points {sorted(unknown)}: read_coco reads 'polygon' and 'keypoints'")
    num_keypoints = max((len(c.get("keypoints", [])) for c in data["categories"]), default=0)
    if "keypoints" in points and not num_keypoints:
        raise ValueError(f"{annotation_file} names no keypoints in its categories (COCO's person_keypoints files do)")
    images = _listed_images(data, annotation_file, image_dir)
    per_image: dict[int, list[dict]] = {i: [] for i in images}
    for ann in data["annotations"]:
        _check_image_id(ann, images, annotation_file)
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
        if "polygon" in points:
            records[-1]["polygon"] = torch.tensor([_polygon_points(a, h, w, max_points) for a in anns]
                                                  ).reshape(-1, 2 * max_points)
        if "keypoints" in points:
            records[-1]["keypoints"] = torch.tensor([_keypoint_points(a, h, w, num_keypoints) for a in anns]
                                                    ).reshape(-1, 2 * num_keypoints)
            records[-1]["num_keypoints"] = torch.tensor([int(a.get("num_keypoints", 0)) for a in anns],
                                                        dtype=torch.long)
    return records, categories


def read_captions(annotation_file: str | Path, image_dir: str | Path) -> list[dict[str, Any]]:
    """captions_<split>.json -> one record per image in the file's order: `id`, `path`, `height`, `width` and
    `captions` (its captions in the file's order)."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    data = json.loads(annotation_file.read_text())
    missing = [k for k in ("images", "annotations") if k not in data]
    if missing:
        raise ValueError(f"{annotation_file} is not a COCO captions file: it has no {', '.join(missing)}")
    images = _listed_images(data, annotation_file, image_dir)
    captions: dict[int, list[str]] = {i: [] for i in images}
    for ann in data["annotations"]:
        _check_image_id(ann, images, annotation_file)
        if not isinstance(ann.get("caption"), str):
            raise ValueError(f"{annotation_file}: caption {ann.get('id')} has no 'caption' text")
        captions[int(ann["image_id"])].append(ann["caption"])
    return [{"id": i, "path": image_dir / im["file_name"], "height": int(im["height"]), "width": int(im["width"]),
             "captions": captions[i]} for i, im in images.items()]


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
    return crop(image, boxes, *_random_offset(image, image_size, generator), image_size, image_size)


def _random_offset(image: torch.Tensor, image_size: int, generator: torch.Generator | None) -> tuple[int, int]:
    """The official fixed-size crop's offset: one uniform draw scales both free ranges."""
    h, w = image.shape[-2:]
    u = torch.rand((), generator=generator).item()
    return int(max(h - image_size, 0) * u), int(max(w - image_size, 0) * u)


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right: [ymin, xmin, ymax, xmax] -> [ymin, 1 - xmax, ymax, 1 - xmin]."""
    return image.flip(-1), torch.stack([boxes[:, 0], 1 - boxes[:, 3], boxes[:, 2], 1 - boxes[:, 1]], 1)


def pad_bottom_right(image: torch.Tensor, boxes: torch.Tensor, image_size: int, value: float = PAD_VALUE
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to image_size x image_size on the bottom and right with `value`; boxes renormalised to the padded image."""
    h, w = image.shape[-2:]
    out = F.pad(image, (0, image_size - w, 0, image_size - h), value=value)
    return out, boxes * boxes.new_tensor([h / image_size, w / image_size] * 2)


POINT_KEYS = ("polygon", "keypoints")
#: the per-object fields of a record
OBJECT_KEYS = ("boxes", "labels", "iscrowd", "area", "polygon", "keypoints", "num_keypoints")


def move_points(points: torch.Tensor, offset: tuple[float, float], scale: tuple[float, float], key: str,
                frame: bool = False) -> torch.Tensor:
    """Points [n, 2M] (y, x pairs, normalised) -> (p - offset) x scale for every value that is not reserved (< 0).
    With `frame` (a crop), polygon points are clipped to [0, 1] and a keypoint with a coordinate outside (0, 1) becomes
    invisible (official `handle_out_of_frame_points`)."""
    yx = points.unflatten(-1, (-1, 2))  # also for no objects (an image without annotations)
    moved = (yx - yx.new_tensor(offset)) * yx.new_tensor(scale)
    if frame and key == "keypoints":
        outside = ((moved <= 0) | (moved >= 1)).any(-1, keepdim=True)
        moved = torch.where(outside, torch.full_like(moved, INVISIBLE_FLOAT), moved)
    elif frame:
        moved = moved.clamp(0, 1)
    return torch.where(yx >= 0, moved, yx).reshape(points.shape)


def flip_points(points: torch.Tensor) -> torch.Tensor:
    yx = points.view(len(points), -1, 2)
    flipped = torch.stack([yx[..., 0], 1 - yx[..., 1]], -1)
    return torch.where(yx >= 0, flipped, yx).reshape(points.shape)


def _points(target: dict, fn) -> dict:
    return {k: fn(target[k], k) for k in POINT_KEYS if k in target}


def color_distort(image: torch.Tensor, strength: float) -> torch.Tensor:
    """The official `random_color_jitter` (SimCLR v2's colour distortion, `zoo.data.augment.color_distortion`),
    clipped to [0, 1]; it draws from torch's global generator."""
    return color_distortion(strength)(image).clamp(0, 1)


def train_transform(image: torch.Tensor, target: dict[str, torch.Tensor], image_size: int, min_scale: float = 0.3,
                    max_scale: float = 2.0, generator: torch.Generator | None = None, flip: bool = True,
                    color_jitter: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pix2seq's training augmentation (official order): scale jitter, fixed-size crop, horizontal flip (unless
    `flip` is False), colour distortion of strength `color_jitter` (captioning; 0: none), removal of empty boxes and
    crowds, bottom/right padding; points move with the boxes."""
    image = scale_jitter(image, image_size, min_scale, max_scale, generator)
    h, w = image.shape[-2:]
    top, left = _random_offset(image, image_size, generator)
    image, boxes = crop(image, target["boxes"], top, left, image_size, image_size)
    ch, cw = image.shape[-2:]
    points = _points(target, lambda p, k: move_points(p, (top / h, left / w), (h / ch, w / cw), k, frame=True))
    if flip and torch.rand((), generator=generator).item() > 0.5:
        image, boxes = hflip(image, boxes)
        points = {k: flip_points(p) for k, p in points.items()}
    if color_jitter > 0:
        image = color_distort(image, color_jitter)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & ~target["iscrowd"]
    unpadded = torch.tensor(image.shape[-2:])
    image, boxes = pad_bottom_right(image, boxes, image_size)
    ratio = (ch / image_size, cw / image_size)
    points = {k: move_points(p, (0.0, 0.0), ratio, k)[keep] for k, p in points.items()}
    out = {k: v[keep] for k, v in target.items() if k in ("labels", "iscrowd", "area", "num_keypoints")}
    return image, {**target, **out, **points, "boxes": boxes[keep], "unpadded_size": unpadded}


def eval_transform(image: torch.Tensor, target: dict[str, torch.Tensor], image_size: int
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pix2seq's evaluation transform: an antialiased aspect-preserving resize to fit image_size (sizes rounded as
    tf.image.resize(preserve_aspect_ratio=True) rounds them), then bottom/right padding."""
    h, w = image.shape[-2:]
    scale = min(image_size / h, image_size / w)
    image = _resize(image, (round(h * scale), round(w * scale)), antialias=True)
    unpadded = torch.tensor(image.shape[-2:])
    ratio = (image.shape[-2] / image_size, image.shape[-1] / image_size)
    image, boxes = pad_bottom_right(image, target["boxes"], image_size)
    points = _points(target, lambda p, k: move_points(p, (0.0, 0.0), ratio, k))
    return image, {**target, **points, "boxes": boxes, "unpadded_size": unpadded}


def boxes_to_pixels(boxes: torch.Tensor, target: dict[str, torch.Tensor], image_size: int) -> torch.Tensor:
    """Normalised [ymin, xmin, ymax, xmax] in the padded model input -> [xmin, ymin, xmax, ymax] pixels of the
    original image (the official eval rescaling: padded size / unpadded size x original size), through the crop of
    `COCOInstances` where there is one."""
    scale = image_size / target["unpadded_size"].to(boxes) * target["orig_size"].to(boxes)  # [h, w]
    yxyx = boxes * scale.repeat(2) + (target["crop_offset"].to(boxes).repeat(2) if "crop_offset" in target else 0)
    return yxyx[..., [1, 0, 3, 2]]


class COCODetection(Dataset):
    """One split: items are (image [3, S, S] in [0, 1], target dict) after the training or evaluation transform.

    Target keys: `boxes` [n, 4] normalised [ymin, xmin, ymax, xmax] in the padded image, `labels` [n] (COCO category
    ids), `iscrowd` [n], `area` [n], `image_id`, `orig_size` [2] and `unpadded_size` [2] (height, width); with
    `points` also `polygon` / `keypoints` (and `num_keypoints`) as `read_coco` reads them, moved with the image.
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, image_size: int, train: bool,
                 min_scale: float = 0.3, max_scale: float = 2.0, points: tuple[str, ...] = (), max_points: int = 128,
                 flip: bool = True):
        self.records, self.categories = read_coco(annotation_file, image_dir, points, max_points)
        if train:
            self.records = [r for r in self.records if len(r["labels"])]
        self.image_size, self.train, self.min_scale, self.max_scale = image_size, train, min_scale, max_scale
        self.flip, self.points = flip, tuple(points)

    def with_points(self, points: tuple[str, ...]) -> "COCODetection":
        """The same split (records shared, not read again) giving targets with only these of the points read."""
        view = copy.copy(self)
        view.points = tuple(points)
        return view

    def of_category(self, category: int | None) -> "COCODetection":
        """The same split with each image's objects cut to those of `category` (None: all of them)."""
        if category is None:
            return self
        view = copy.copy(self)
        view.records = [{**r, **{k: r[k][r["labels"] == category] for k in OBJECT_KEYS if k in r}}
                        for r in self.records]
        return view

    def __len__(self) -> int:
        return len(self.records)

    def transform(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.train:
            return train_transform(image, target, self.image_size, self.min_scale, self.max_scale, flip=self.flip)
        return eval_transform(image, target, self.image_size)

    def target(self, r: dict, image: torch.Tensor) -> dict[str, torch.Tensor]:
        keys = ("boxes", "labels", "iscrowd", "area", *self.points,
                *(("num_keypoints",) if "keypoints" in self.points else ()))
        return {**{k: r[k] for k in keys}, "image_id": torch.tensor(r["id"]),
                "orig_size": torch.tensor(image.shape[-2:])}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        r = self.records[i]
        image = load_image(r["path"])
        return self.transform(image, self.target(r, image))


def crop_to_box(image: torch.Tensor, target: dict[str, torch.Tensor], pad_scale: float
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official `crop_to_bbox` for a one-object target: the image cut to the object's box (corners floored /
    ceiled on the (size - 1) grid) widened by pad_scale x its size on each side and clipped to the image; boxes and
    points renormalised to the crop, reserved point values kept. Adds `crop_offset` [2] (top, left pixels)."""
    h, w = image.shape[-2:]
    y0, x0, y1, x1 = target["boxes"][0].tolist()
    y0, x0 = math.floor(y0 * (h - 1)), math.floor(x0 * (w - 1))
    y1, x1 = math.ceil(y1 * (h - 1)), math.ceil(x1 * (w - 1))
    ypad, xpad = int((y1 - y0 + 1) * pad_scale), int((x1 - x0 + 1) * pad_scale)
    y0, x0 = max(0, y0 - ypad), max(0, x0 - xpad)
    y1, x1 = min(h - 1, y1 + ypad), min(w - 1, x1 + xpad)
    image, boxes = crop(image, target["boxes"], y0, x0, y1 - y0 + 1, x1 - x0 + 1)
    scale = (h / (y1 - y0 + 1), w / (x1 - x0 + 1))
    points = _points(target, lambda p, k: move_points(p, (y0 / h, x0 / w), scale, k, frame=True))
    return image, {**target, **points, "boxes": boxes, "crop_offset": torch.tensor([y0, x0])}


class COCOInstances(COCODetection):
    """One example per object (the official `unbatch` with `crop_to_bbox`, used for keypoints): the image cropped to
    the object's box padded by `crop_pad_scale` of its size, then the usual transform (no flip). Objects kept: not
    crowds, of `category` if given, and in training with at least one labelled keypoint. Targets hold the one object
    plus `crop_offset`; `orig_size` is the crop's size (points map back to the image with `points_to_pixels`)."""

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, image_size: int, train: bool,
                 min_scale: float = 0.3, max_scale: float = 1.0, points: tuple[str, ...] = ("keypoints",),
                 max_points: int = 128, crop_pad_scale: float = 0.5, category: int | None = None):
        super().__init__(annotation_file, image_dir, image_size, train, min_scale, max_scale, points, max_points,
                         flip=False)
        self.crop_pad_scale = crop_pad_scale
        self.index = [(i, j) for i, r in enumerate(self.records) for j in range(len(r["labels"]))
                      if not r["iscrowd"][j] and (category is None or int(r["labels"][j]) == category)
                      and not (train and "num_keypoints" in r and int(r["num_keypoints"][j]) == 0)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        k, j = self.index[i]
        r = self.records[k]
        image = load_image(r["path"])
        target = {key: (v[j:j + 1] if torch.is_tensor(v) and v.ndim and key not in ("image_id", "orig_size") else v)
                  for key, v in self.target(r, image).items()}
        image, target = crop_to_box(image, target, self.crop_pad_scale)
        return self.transform(image, {**target, "orig_size": torch.tensor(image.shape[-2:])})


class COCOCaptions(Dataset):
    """One split of a captions file: items are (image [3, S, S], target) with target `captions` (the image's
    captions), `image_id`, `orig_size` and `unpadded_size`, after the captioning augmentation in training (the
    detection one with colour distortion of strength `color_jitter`; images without captions skipped) or the
    evaluation transform."""

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, image_size: int, train: bool,
                 min_scale: float = 0.3, max_scale: float = 2.0, color_jitter: float = 0.5):
        self.records = read_captions(annotation_file, image_dir)
        if train:
            self.records = [r for r in self.records if r["captions"]]
        self.image_size, self.train, self.min_scale, self.max_scale = image_size, train, min_scale, max_scale
        self.color_jitter = color_jitter

    def __len__(self) -> int:
        return len(self.records)

    def texts(self) -> list[str]:
        """Every caption of the split, in order (what a caption tokenizer is trained on)."""
        return [c for r in self.records for c in r["captions"]]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        r = self.records[i]
        image = load_image(r["path"])
        target = {"boxes": torch.zeros(0, 4), "iscrowd": torch.zeros(0, dtype=torch.bool)}
        if self.train:
            image, target = train_transform(image, target, self.image_size, self.min_scale, self.max_scale,
                                            color_jitter=self.color_jitter)
        else:
            image, target = eval_transform(image, target, self.image_size)
        return image, {"captions": list(r["captions"]), "image_id": torch.tensor(r["id"]),
                       "orig_size": torch.tensor([r["height"], r["width"]]), "unpadded_size": target["unpadded_size"]}


def points_to_pixels(points: torch.Tensor, target: dict[str, torch.Tensor], image_size: int) -> torch.Tensor:
    """Points [..., 2M] (normalised y, x in the padded model input) -> pixel [..., M, 2] (x, y) of the original
    image, through the crop of `COCOInstances` where there is one; reserved values (< 0) stay as they are."""
    scale = image_size / target["unpadded_size"].to(points) * target["orig_size"].to(points)
    yx = points.unflatten(-1, (-1, 2))
    moved = yx * scale + (target["crop_offset"].to(yx) if "crop_offset" in target else 0)
    return torch.where(yx < 0, yx, moved).flip(-1)


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Images (all padded to the same square) stacked to [B, 3, S, S]; targets kept as a list of dicts."""
    return torch.stack([im for im, _ in batch]), [t for _, t in batch]


def image_loader(ds: Dataset, train: bool, hp: Any, seed: int = 0) -> DataLoader:
    """A loader of (images, list of targets) batches with the DataModule's sizes (`hp`: batch_size,
    eval_batch_size, num_workers, seed); training shuffles by epoch (`EpochSampler`, seeded with hp.seed + seed)."""
    return DataLoader(ds, batch_size=hp.batch_size if train else (hp.eval_batch_size or hp.batch_size),
                      sampler=EpochSampler(ds, hp.seed + seed) if train else None, collate_fn=collate,
                      num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0)


TASKS = ("detection", "instance_segmentation", "keypoints", "captioning")


class COCOSplits(L.LightningDataModule):
    """What the COCO-layout DataModules share: a split's folder is the one (under data_dir, else $ZOO_HOME/data/coco)
    whose annotations/ holds `annotation_file` for it; prepare_data checks every split; loaders as `image_loader`."""

    annotation_file = "instances_{split}.json"
    how = HOW
    data_dir: str | None
    splits: dict[str, str]
    sets: dict[str, Dataset]

    def root(self, split: str) -> Path:
        """The folder holding `annotations/<annotation_file>`, else a FileNotFoundError saying how to get it."""
        name = self.annotation_file.format(split=split)
        return locate(data_folders(self.data_dir, "coco"),
                      lambda folder: folder if (folder / "annotations" / name).is_file() else None,
                      f"annotations/{name}", self.how)

    def prepare_data(self) -> None:
        for split in dict.fromkeys(self.splits.values()):  # in order (a set's order changes with the hash seed)
            self.root(split)

    def _loader(self, name: str, ds: Dataset | None = None, seed: int = 0) -> DataLoader:
        return image_loader(self.sets[name] if ds is None else ds, name == "train", self.hparams, seed)


class COCODetectionDataModule(COCOSplits):
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
        tasks: None for detection alone (one loader per stage); else Pix2seq v2's tasks, each with its own data
            (official multi-task): "detection", "instance_segmentation" (polygons of `max_points` points at most,
            jittered in [`min_scale`, `segmentation_max_scale`], the official 0.3 to 1.0) and "keypoints" (one
            example per object of `keypoint_category`, cropped to its box widened by `crop_pad_scale`, read from
            `keypoint_file` and jittered in [0.3, `keypoint_max_scale`]) and "captioning"
            (the images of `caption_file` with their captions, colour-distorted with strength `caption_color_jitter`
            in training). Training then yields {task: batch} per step, evaluation one loader per task in this order.
        keypoint_eval_images: the keypoint task's evaluation examples are whole images, each with all its annotated
            objects of `keypoint_category`, instead of one crop per annotated object: what a model that prompts
            with its own detections evaluates on (`Pix2SeqMultiTask(keypoint_boxes="detected")`, the official
            evaluation on detected boxes). Training keeps the crops.
    """

    def __init__(self, data_dir: str | None = None, train_split: str = "train2017", val_split: str = "val2017",
                 test_split: str | None = None, image_size: int = 640, min_scale: float = 0.3, max_scale: float = 2.0,
                 batch_size: int = 32, eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0,
                 tasks: list[str] | None = None, max_points: int = 128,
                 keypoint_file: str = "person_keypoints_{split}.json", keypoint_category: int | None = 1,
                 keypoint_max_scale: float = 1.0, crop_pad_scale: float = 0.5,
                 caption_file: str = "captions_{split}.json", caption_color_jitter: float = 0.5,
                 keypoint_eval_images: bool = False, segmentation_max_scale: float = 1.0):
        super().__init__()
        self.save_hyperparameters()
        unknown = set(tasks or ()) - set(TASKS)
        if unknown or tasks == []:
            raise ValueError(f"tasks {sorted(unknown) or tasks}: choose among {list(TASKS)}")
        self.data_dir, self.image_size = data_dir, image_size
        self.splits = {"train": train_split, "val": val_split, "test": test_split or val_split}
        self.tasks = list(tasks) if tasks else None
        # kept here: a subclass's hparams may not list them
        self.task_args = {"max_points": max_points, "keypoint_file": keypoint_file,
                          "keypoint_category": keypoint_category, "keypoint_max_scale": keypoint_max_scale,
                          "crop_pad_scale": crop_pad_scale, "caption_file": caption_file,
                          "caption_color_jitter": caption_color_jitter,
                          "keypoint_eval_images": keypoint_eval_images,
                          "segmentation_max_scale": segmentation_max_scale}
        self.sets: dict[str, COCODetection] = {}
        self.task_sets: dict[str, dict[str, COCODetection]] = {}

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        for name, split in self.splits.items():
            if name not in self.sets:
                root = self.root(split)
                image_dir = root / split
                if not image_dir.is_dir():
                    raise FileNotFoundError(f"the image folder {image_dir} is missing (it holds the images of "
                                            f"annotations/instances_{split}.json). {HOW}")
                polygons = ("polygon",) if "instance_segmentation" in (self.tasks or ()) else ()
                self.sets[name] = COCODetection(root / "annotations" / f"instances_{split}.json", image_dir,
                                                self.image_size, name == "train", hp.min_scale, hp.max_scale,
                                                polygons, self.task_args["max_points"]).with_points(())
                if self.tasks:
                    self.task_sets[name] = {t: self._task_set(t, root, split, name) for t in self.tasks}

    def _task_set(self, task: str, root: Path, split: str, name: str) -> COCODetection:
        hp, a = self.hparams, self.task_args
        train = name == "train"
        if task == "detection":
            return self.sets[name]
        if task == "instance_segmentation":  # the official segmentation jitter stops at 1.0 (no crop cuts a polygon)
            view = self.sets[name].with_points(("polygon",))
            view.max_scale = max(hp.min_scale, a["segmentation_max_scale"])
            return view
        if task == "captioning":
            file = root / "annotations" / a["caption_file"].format(split=split)
            if not file.is_file():
                raise FileNotFoundError(f"the captions {file} are missing (caption_file {a['caption_file']!r}). {HOW}")
            return COCOCaptions(file, root / split, self.image_size, train, hp.min_scale, hp.max_scale,
                                a["caption_color_jitter"])
        file = root / "annotations" / a["keypoint_file"].format(split=split)
        if not file.is_file():
            raise FileNotFoundError(f"the keypoint annotations {file} are missing (keypoint_file "
                                    f"{a['keypoint_file']!r}). {HOW}")
        if a["keypoint_eval_images"] and not train:
            return COCODetection(file, root / split, self.image_size, False, points=("keypoints",),
                                 max_points=a["max_points"]).of_category(a["keypoint_category"])
        return COCOInstances(file, root / split, self.image_size, train, hp.min_scale, a["keypoint_max_scale"],
                             ("keypoints",), a["max_points"], a["crop_pad_scale"], a["keypoint_category"])

    def whole_keypoint_images(self) -> "COCODetectionDataModule":
        """The same DataModule (same class and arguments) with keypoint_eval_images on: its keypoint task evaluates
        on whole images, as a model prompting with its own detections needs."""
        import inspect

        names = inspect.signature(type(self)).parameters
        return type(self)(**{**{k: v for k, v in self.hparams.items() if k in names}, "keypoint_eval_images": True})

    def caption_texts(self) -> list[str]:
        """The training split's captions (a caption tokenizer is trained on these and nothing else)."""
        self.setup("fit")
        if "captioning" not in (self.tasks or ()):
            raise ValueError("this DataModule has no captioning task: add 'captioning' to its tasks")
        return self.task_sets["train"]["captioning"].texts()

    @property
    def categories(self) -> dict[int, str]:
        return self.sets["train"].categories if "train" in self.sets else {}

    def _loaders(self, name: str):
        """One loader, or with tasks one per task (training: a dict, each task shuffled with its own seed)."""
        if not self.tasks:
            return self._loader(name)
        loaders = {t: self._loader(name, ds, k) for k, (t, ds) in enumerate(self.task_sets[name].items())}
        return loaders if name == "train" else list(loaders.values())

    def train_dataloader(self):
        return self._loaders("train")

    def val_dataloader(self):
        return self._loaders("val")

    def test_dataloader(self):
        return self._loaders("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
