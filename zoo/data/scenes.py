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
segmentation its visible ink as COCO polygons (the outlines of the mask's parts along the pixel edges, corners cut,
holes left out as COCO's polygons leave them, simplified by Douglas-Peucker to at most `max_points` points in all; `mask_polygons`),
`area` the visible pixel count, the category the source label (ids 1-10), and four keypoints, the object's extreme
points (the topmost, bottommost, leftmost and rightmost ink pixel of its full extent, at the middle of that row or
column; visibility 2 where the pixel is visible, 1 where a later object hides it), for Pix2seq v2's keypoint task.
Each scene also has five captions (`annotations/captions_<split>.json`, COCO's captions layout), written from its
annotations by templates (`scene_captions`): the objects' classes, counts, colours (the tint's hue named), sizes,
heights in the canvas (top, middle, bottom; never left or right, so a horizontal flip keeps them true) and which
object is in front of which. They are templated descriptions of derived scenes, not human captions. Train scenes draw objects from the source's training images except its last `val_pool` images, which
feed the validation scenes; test scenes use the source's test images only, so no image is shared between splits.
The whole dataset is a function of its arguments and `seed`.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zoo.data._base import build_once
from zoo.data.coco import COCODetectionDataModule
from zoo.data.panoptic import COCOPanopticDataModule


KEYPOINTS = ("top", "bottom", "left", "right")
MAX_POINTS = 128
CAPTIONS_PER_SCENE = 5
#: the nouns captions use for the sources' classes (singular, plural)
NOUNS = {"T-shirt/top": ("t-shirt", "t-shirts"), "Trouser": ("pair of trousers", "pairs of trousers"),
         "Pullover": ("pullover", "pullovers"), "Dress": ("dress", "dresses"), "Coat": ("coat", "coats"),
         "Sandal": ("sandal", "sandals"), "Shirt": ("shirt", "shirts"), "Sneaker": ("sneaker", "sneakers"),
         "Bag": ("bag", "bags"), "Ankle boot": ("ankle boot", "ankle boots"),
         **{str(d): (w, w + ("es" if w.endswith("x") else "s")) for d, w in enumerate(
             ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))}}
_COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta")
_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _simplify(points: np.ndarray, eps: float) -> np.ndarray:
    """Douglas-Peucker on an open polyline [n, 2]: the end points and every point farther than eps from the chord."""
    if len(points) < 3:
        return points
    a, b = points[0], points[-1]
    chord = b - a
    d = np.abs(chord[0] * (points[:, 1] - a[1]) - chord[1] * (points[:, 0] - a[0])) / max(np.hypot(*chord), 1e-9)
    i = int(d.argmax())
    if d[i] <= eps:
        return np.stack([a, b])
    return np.concatenate([_simplify(points[:i + 1], eps)[:-1], _simplify(points[i:], eps)])


def _simplify_ring(ring: np.ndarray, eps: float) -> np.ndarray:
    """A closed ring (first point not repeated) split at the point farthest from its first, each half simplified."""
    j = int(np.hypot(*(ring - ring[0]).T).argmax())
    closed = np.concatenate([ring, ring[:1]])
    return np.concatenate([_simplify(closed[:j + 1], eps)[:-1], _simplify(closed[j:], eps)[:-1]])


def mask_polygons(mask: np.ndarray, max_points: int = MAX_POINTS, eps: float = 0.5) -> list[list[float]]:
    """COCO polygons ([x1, y1, x2, y2, ...] in pixels, pixel i spanning [i, i + 1]) of a boolean mask's parts: the
    0.5 level lines of the mask between pixel centres (contourpy) without the holes, largest first, simplified with a tolerance that grows
    from eps by 1.5x until they hold at most max_points points together, a separator between parts counted as
    one; parts left with fewer than 3 points are
    dropped."""
    import contourpy

    lines = contourpy.contour_generator(z=np.pad(mask.astype(np.float64), 1), line_type="Separate").lines(0.5)
    rings = [line[:-1] - 0.5 for line in lines if len(line) > 3]  # padded index - 1 + 0.5: the pixel centre
    if not rings:
        return []
    signed = [0.5 * float(np.sum(r[:, 0] * np.roll(r[:, 1], -1) - np.roll(r[:, 0], -1) * r[:, 1])) for r in rings]
    outer = np.sign(signed[int(np.argmax(np.abs(signed)))])
    rings = [r for r, a in sorted(zip(rings, signed), key=lambda t: -abs(t[1])) if np.sign(a) == outer]
    while True:
        simple = [p for p in (_simplify_ring(r, eps) for r in rings) if len(p) >= 3]
        if sum(len(p) for p in simple) + len(simple) - 1 <= max_points:  # with a separator between parts
            return [[round(float(v), 2) for v in p.flatten()] for p in simple]
        eps *= 1.5


def extreme_points(full: np.ndarray, visible: np.ndarray) -> list[float]:
    """COCO keypoints [x, y, v] x 4 of a mask's extreme pixels (top, bottom, left, right; the middle one of the
    extreme row or column), at pixel centres; v = 2 where visible, 1 where hidden."""
    ys, xs = np.nonzero(full)
    out: list[float] = []
    for axis, pick in ((ys, ys.min()), (ys, ys.max()), (xs, xs.min()), (xs, xs.max())):
        on = np.flatnonzero(axis == pick)
        k = on[len(on) // 2]
        y, x = int(ys[k]), int(xs[k])
        out += [x + 0.5, y + 0.5, 2 if visible[y, x] else 1]
    return out


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
    objects as {box: [y0, x0, y1, x1] pixels, label, mask: the visible part, full: the whole object, both bool
    [canvas, canvas], colour: the tint [3]}), in paste order (later ones in front)."""
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
        colour = _colour(rng)
        region[:] = region * (1 - alpha[..., None]) + alpha[..., None] * colour
        visible = np.concatenate([visible & ~mask[None], mask[None]])
        objects.append({"box": box, "label": int(labels[i]), "mask": mask, "full": mask, "colour": colour})
    for o, m in zip(objects, visible):
        o["mask"] = m
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), objects


def colour_name(rgb: np.ndarray) -> str:
    """The name of a tint's hue: the nearest of red, yellow, green, cyan, blue and magenta (60 degrees apart)."""
    hue = colorsys.rgb_to_hsv(*(float(v) for v in rgb))[0]
    return _COLOURS[round(hue * 6) % 6]


def _nouns(name: str) -> tuple[str, str]:
    return NOUNS.get(name, (name.lower(), name.lower() + "s"))


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _counted(n: int, noun: tuple[str, str]) -> str:
    return f"{'an' if noun[0][0] in 'aeiou' else 'a'} {noun[0]}" if n == 1 else f"{_NUMBERS[min(n, 10)]} {noun[1]}"


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def scene_captions(objects: list[dict], class_names: tuple[str, ...], canvas: int, rng: np.random.Generator,
                   n: int = CAPTIONS_PER_SCENE) -> list[str]:
    """`n` templated captions of a scene from its annotations (`render_scene`'s objects, in paste order), each from
    its own template: the class counts; the objects largest first with their colours; the largest object and how
    many others there are; the largest objects' heights (top, middle or bottom third); which object is in front of
    which (later ones are). Words are varied a little by `rng` (a picture of / an image of, items / objects)."""
    def article(o: dict, size: bool = False) -> str:
        noun = _nouns(class_names[o["label"]])[0]
        longer = max(o["box"][2] - o["box"][0], o["box"][3] - o["box"][1])
        words = [("small " if longer < canvas * 0.2 else "large " if longer > canvas * 0.35 else "") if size else "",
                 colour_name(o["colour"]) + " ", noun]
        text = "".join(words)
        return ("an " if text[0] in "aeiou" else "a ") + text

    def height(o: dict) -> str:
        centre = (o["box"][0] + o["box"][2]) / 2 / canvas
        return "at the top" if centre < 1 / 3 else "in the middle" if centre < 2 / 3 else "at the bottom"

    items = ("items", "objects", "things")[int(rng.integers(3))]
    lead = ("a picture of ", "an image of ", "")[int(rng.integers(3))]
    by_size = sorted(objects, key=lambda o: -float((o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1])))
    counts: dict[int, int] = {}
    for o in objects:
        counts[o["label"]] = counts.get(o["label"], 0) + 1
    ranked = sorted(counts, key=lambda c: -counts[c])
    others = len(objects) - 1
    captions = [
        lead + _join([_counted(counts[c], _nouns(class_names[c])) for c in ranked]) + " on a dark background",
        _join([article(o) for o in by_size]),
        article(by_size[0], size=True) + (f" with {_NUMBERS[min(others, 10)]} other "
                                          f"{items if others > 1 else items[:-1]}" if others else " on its own"),
        _join([f"{article(o)} {height(o)}" for o in by_size[:3]]
              + ([f"{_NUMBERS[min(others - 2, 10)]} more"] if others > 2 else [])),
    ]
    fronts = [(a, b) for k, b in enumerate(objects) for a in objects[k + 1:] if _overlap(a["box"], b["box"])]
    if fronts:
        a, b = fronts[int(rng.integers(len(fronts)))]
        captions.append(f"{article(a)} in front of {article(b)}")
    else:
        captions.append(f"{_NUMBERS[min(len(objects), 10)]} separate {items}" if len(objects) > 1
                        else f"a single {items[:-1]}")
    return captions[:n]


def _panoptic_annotation(objects: list[dict], shape: tuple[int, int], image_id: int, name: str, background: int,
                         png_dir: Path) -> dict:
    """Write a scene's panoptic PNG (segment 1 the background, segment k + 2 the k-th object's visible pixels) and
    return its COCO panoptic annotation."""
    from zoo.data.panoptic import id_to_rgb

    ids = np.ones(shape, np.int64)
    segments = []
    for k, o in enumerate(objects):
        ids[o["mask"]] = k + 2
    for sid, cat in [(1, background)] + [(k + 2, o["label"] + 1) for k, o in enumerate(objects)]:
        ys, xs = np.nonzero(ids == sid)
        if len(ys):
            segments.append({"id": sid, "category_id": cat, "iscrowd": 0, "area": int(len(ys)),
                             "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                      int(ys.max() - ys.min() + 1)]})
    Image.fromarray(id_to_rgb(ids)).save(png_dir / name, optimize=False)
    return {"image_id": image_id, "file_name": name, "segments_info": segments}


def write_scenes(out_dir: str | Path, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                 test_labels: np.ndarray, class_names: tuple[str, ...], sizes: dict[str, int], val_pool: int = 5000,
                 seed: int = 0, max_points: int = MAX_POINTS, **render) -> Path:
    """Write the splits of `sizes` ({"train": n, "val": n, "test": n}) under out_dir in the COCO layout, each
    object's polygons with at most max_points points; the folder is complete only once `done` exists (a crash
    leaves no folder that looks finished)."""
    out = Path(out_dir)
    if not 0 < val_pool < len(train_images):
        raise ValueError(f"val_pool {val_pool} must leave training images for the training scenes "
                         f"(the source has {len(train_images)})")
    pools = {"train": (train_images[:-val_pool], train_labels[:-val_pool]),
             "val": (train_images[-val_pool:], train_labels[-val_pool:]), "test": (test_images, test_labels)}
    categories = [{"id": i + 1, "name": n, "supercategory": "object", "keypoints": list(KEYPOINTS), "skeleton": []}
                  for i, n in enumerate(class_names)]
    background = len(class_names) + 1
    panoptic_categories = [{"id": c["id"], "name": c["name"], "supercategory": "object", "isthing": 1}
                           for c in categories] + [{"id": background, "name": "background",
                                                    "supercategory": "background", "isthing": 0}]
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for k, (split, n) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, k])
        pool, labels = pools[split]
        (out / split).mkdir(exist_ok=True)
        (out / "annotations" / f"panoptic_{split}").mkdir(exist_ok=True)
        images, annotations, captions, panoptic = [], [], [], []
        for i in range(n):
            pixels, objects = render_scene(pool, labels, rng, **render)
            words = np.random.default_rng([seed, k, i, 1])  # apart from the drawing, which it must not change
            for text in scene_captions(objects, class_names, pixels.shape[0], words):
                captions.append({"id": len(captions) + 1, "image_id": i + 1, "caption": text})
            name = f"{i:06d}.png"
            Image.fromarray(pixels).save(out / split / name, optimize=False)
            images.append({"id": i + 1, "file_name": name, "height": pixels.shape[0], "width": pixels.shape[1]})
            for o in objects:
                y0, x0, y1, x1 = (float(v) for v in o["box"])
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": o["label"] + 1,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(o["mask"].sum()),
                                    "iscrowd": 0, "segmentation": mask_polygons(o["mask"], max_points),
                                    "keypoints": extreme_points(o["full"], o["mask"]), "num_keypoints": 4})
            panoptic.append(_panoptic_annotation(objects, pixels.shape[:2], i + 1, name, background,
                                                 out / "annotations" / f"panoptic_{split}"))
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"info": {"description": "derived scenes of real images (zoo.data.scenes); not COCO"},
             "images": images, "annotations": annotations, "categories": categories}))
        (out / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(
            {"info": {"description": "derived scenes of real images (zoo.data.scenes); not COCO"},
             "images": images, "annotations": panoptic, "categories": panoptic_categories}))
        (out / "annotations" / f"captions_{split}.json").write_text(json.dumps(
            {"info": {"description": "templated captions of derived scenes (zoo.data.scenes); not COCO"},
             "images": images, "annotations": captions}))
    (out / "done").touch()
    return out


class _SceneFolder:
    """Generates the scenes of `scene_args` once into $ZOO_HOME/data/scenes/<source>-<hash of the arguments> and
    points the COCO reader's data_dir there."""

    scene_args: dict[str, Any]
    source_dir: str | None

    @staticmethod
    def _scene_args(source: str, train: int, val: int, test: int, val_pool: int, canvas: int, max_objects: int,
                    min_size: int, max_size: int, max_iou: float, clutter: int, seed: int, max_points: int
                    ) -> dict[str, Any]:
        return {"source": source, "train": train, "val": val, "test": test, "val_pool": val_pool, "canvas": canvas,
                "max_objects": max_objects, "min_size": min_size, "max_size": max_size, "max_iou": max_iou,
                "clutter": clutter, "seed": seed, "max_points": max_points,
                "format": 4}  # 4: polygons, extreme-point keypoints, captions, panoptic

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
                         DATASETS[a["source"]]["classes"], {"train": a["train"], "val": a["val"], "test": a["test"]},
                         val_pool=a["val_pool"], seed=a["seed"], canvas=a["canvas"], max_objects=a["max_objects"],
                         min_size=a["min_size"], max_size=a["max_size"], max_iou=a["max_iou"], clutter=a["clutter"],
                         max_points=a["max_points"])

        build_once(folder, write)
        self.data_dir = str(folder)
        super().prepare_data()  # type: ignore[misc]

    def setup(self, stage: str | None = None) -> None:
        if not (self.scene_dir / "done").is_file():  # used without a Trainer (which calls prepare_data first)
            self.prepare_data()
        self.data_dir = str(self.scene_dir)
        super().setup(stage)  # type: ignore[misc]


class SceneDetectionDataModule(_SceneFolder, COCODetectionDataModule):
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
        image_size ... seed, tasks, max_points, crop_pad_scale, caption_color_jitter, keypoint_eval_images: as
            `COCODetectionDataModule` (image_size defaults to the canvas); keypoints come from the instances file,
            every category has them; captions from the templated captions file. caption_color_jitter defaults to
            0 here (official 0.5): the captions name the objects' colours, which a hue jitter or greying would make
            false.
    """

    def __init__(self, source: str = "fashion-mnist", source_dir: str | None = None, train_size: int = 8000,
                 val_size: int = 500, test_size: int = 1000, val_pool: int = 5000, canvas: int = 128,
                 max_objects: int = 8, min_size: int = 16, max_size: int = 64, max_iou: float = 0.5, clutter: int = 6,
                 scene_seed: int = 0,
                 image_size: int = 128, min_scale: float = 0.3, max_scale: float = 2.0, batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0,
                 tasks: list[str] | None = None, max_points: int = 128, crop_pad_scale: float = 0.5,
                 caption_color_jitter: float = 0.0, keypoint_eval_images: bool = False):
        self.scene_args = self._scene_args(source, train_size, val_size, test_size, val_pool, canvas, max_objects,
                                           min_size, max_size, max_iou, clutter, scene_seed, max_points)
        super().__init__(None, "train", "val", "test", image_size, min_scale, max_scale, batch_size, eval_batch_size,
                         num_workers, seed, tasks, max_points, "instances_{split}.json", None, 1.0, crop_pad_scale,
                         "captions_{split}.json", caption_color_jitter, keypoint_eval_images)
        self.save_hyperparameters()
        self.source_dir = source_dir



class ScenePanopticDataModule(_SceneFolder, COCOPanopticDataModule):
    """Panoptic segmentation of the derived scenes (see the module docstring): every object a thing segment of its
    class, the rest of the canvas (noise and clutter) one "background" stuff segment; generated as
    `SceneDetectionDataModule` generates them (the same folder for the same scene arguments) and read as COCO
    panoptic (`zoo.data.COCOPanopticDataModule`).

    Args:
        source ... scene_seed: as `SceneDetectionDataModule`.
        image_size, mask_size, min_scale, max_scale, color_jitter, batch_size, eval_batch_size, num_workers, seed:
            as `COCOPanopticDataModule` (defaults: the canvas, half of it, no scale jitter and no colour distortion,
            which the scenes' own scale and colour ranges make unneeded).
    """

    def __init__(self, source: str = "fashion-mnist", source_dir: str | None = None, train_size: int = 8000,
                 val_size: int = 500, test_size: int = 1000, val_pool: int = 5000, canvas: int = 128,
                 max_objects: int = 8, min_size: int = 16, max_size: int = 64, max_iou: float = 0.5, clutter: int = 6,
                 scene_seed: int = 0, image_size: int = 128, mask_size: int = 64, min_scale: float = 1.0,
                 max_scale: float = 1.0, color_jitter: float = 0.0, batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0):
        self.scene_args = self._scene_args(source, train_size, val_size, test_size, val_pool, canvas, max_objects,
                                           min_size, max_size, max_iou, clutter, scene_seed, MAX_POINTS)
        super().__init__(None, "train", "val", "test", image_size, mask_size, min_scale, max_scale, color_jitter,
                         batch_size, eval_batch_size, num_workers, seed)
        self.save_hyperparameters()
        self.source_dir = source_dir
