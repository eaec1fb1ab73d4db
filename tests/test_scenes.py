"""Derived detection scenes (zoo.data.scenes): polygons drawn with pycocotools cover the masks drawn; every box is
the ink box of its object as pasted and its mask the object's visible part; placements respect the overlap limits;
splits draw on disjoint source images; the written folder reads back as COCO, is generated once and is a function
of its arguments."""
import json

import numpy as np
import pytest

from zoo.data.scenes import (SceneDetectionDataModule, colour_name, mask_polygons, render_scene, scene_captions,
                              write_scenes)


def test_polygons_draw_the_visible_masks_with_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    g = np.random.default_rng(0)
    pool = np.zeros((3, 28, 28), np.uint8)
    pool[:, 4:24, 6:22] = 255
    pool[1, 10:16, 10:16] = 0
    ious = []
    for _ in range(10):
        _, objects = render_scene(pool, np.arange(3), g, canvas=64, max_objects=4, min_size=20, max_size=40,
                                  clutter=0)
        for o in objects:
            polys = mask_polygons(o["mask"])
            drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, 64, 64))).astype(bool)
            ious.append((drawn & o["mask"]).sum() / (drawn | o["mask"]).sum())
    assert min(ious) > 0.6 and np.mean(ious) > 0.85
    assert mask_polygons(np.zeros((4, 3), bool)) == []


def test_boxes_masks_and_overlaps_are_exact():
    g = np.random.default_rng(0)
    pool = np.zeros((6, 28, 28), np.uint8)
    for i in range(6):  # solid rectangles of different shapes: the ink box of each is known
        pool[i, 2 + i:20, 4:10 + 2 * i] = 255
    labels = np.arange(6)
    for _ in range(20):
        image, objects = render_scene(pool, labels, g, canvas=64, max_objects=6, min_size=10, max_size=30,
                                      max_iou=0.3, clutter=0)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and 1 <= len(objects) <= 6
        union = np.zeros((64, 64), bool)
        for k, o in enumerate(objects):
            y0, x0, y1, x1 = o["box"].astype(int)
            m = o["mask"]
            assert m.any() and not (union & m).any()  # visible parts never overlap
            union |= m
            ys, xs = np.nonzero(m)
            assert y0 <= ys.min() and ys.max() < y1 and x0 <= xs.min() and xs.max() < x1  # inside its box
            if not any(_overlap(o["box"], p["box"]) for p in objects[k + 1:]):  # unoccluded: box = ink box
                assert (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) == (y0, x0, y1, x1)
            for p in objects[:k]:
                assert _iou(o["box"], p["box"]) <= 0.3 + 1e-6
        assert (image.max(2)[union] > 40).mean() > 0.9  # objects are drawn where their masks say


def _overlap(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_splits_use_disjoint_source_images(tmp_path):
    # each source image has its own label, so an annotation's category says which image it was drawn from
    n_train, n_test = 30, 10
    g = np.random.default_rng(0)
    train, test = (g.integers(0, 255, (n, 28, 28)).astype(np.uint8) for n in (n_train, n_test))
    names = tuple(f"image {i}" for i in range(n_train + n_test))
    out = write_scenes(tmp_path / "s", train, np.arange(n_train), test, n_train + np.arange(n_test), names,
                       {"train": 6, "val": 6, "test": 6}, val_pool=10, canvas=48, min_size=12, max_size=20,
                       clutter=0)
    assert (out / "done").is_file()
    for split, lo, hi in (("train", 1, 20), ("val", 21, 30), ("test", 31, 40)):
        data = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        ids = {a["category_id"] for a in data["annotations"]}
        assert ids and lo <= min(ids) and max(ids) <= hi, (split, sorted(ids))
        assert len(data["categories"]) == 40 and data["categories"][0] == {
            "id": 1, "name": "image 0", "supercategory": "object", "keypoints": ["top", "bottom", "left", "right"],
            "skeleton": []}
        assert all((out / split / im["file_name"]).is_file() for im in data["images"]) and len(data["images"]) == 6
        captions = json.loads((out / "annotations" / f"captions_{split}.json").read_text())
        assert captions["images"] == data["images"] and len(captions["annotations"]) == 5 * 6
        for im in data["images"]:  # the counts caption names every object's class
            objs = [names[a["category_id"] - 1] for a in data["annotations"] if a["image_id"] == im["id"]]
            first = next(c["caption"] for c in captions["annotations"] if c["image_id"] == im["id"])
            assert all(n.lower() in first for n in objs), (first, objs)
    with pytest.raises(ValueError, match="val_pool 30 must leave training images"):
        write_scenes(tmp_path / "t", train, np.arange(n_train), test, np.arange(n_test), names, {"train": 1},
                     val_pool=30)


def test_captions_describe_the_annotations():
    box = lambda y0, x0, y1, x1: np.array([y0, x0, y1, x1], np.float32)  # noqa: E731
    red, blue = np.array([0.9, 0.25, 0.2]), np.array([0.2, 0.3, 0.95])
    objects = [{"box": box(5, 5, 60, 50), "label": 8, "colour": red},  # a large bag, at the top
               {"box": box(90, 10, 100, 20), "label": 7, "colour": blue},  # a small sneaker, at the bottom
               {"box": box(40, 30, 70, 60), "label": 8, "colour": blue}]  # a bag in front of the first
    names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    got = scene_captions(objects, names, 128, np.random.default_rng(0))
    assert len(got) == 5 and got[0].endswith("two bags and a sneaker on a dark background")
    assert got[1] == "a red bag, a blue bag and a blue sneaker"
    assert got[2].startswith("a large red bag with two other ")
    assert got[3] == "a red bag at the top, a blue bag in the middle and a blue sneaker at the bottom"
    assert got[4] == "a blue bag in front of a red bag"
    assert scene_captions(objects[1:2], names, 128, np.random.default_rng(0))[4] in (
        "a single item", "a single object", "a single thing")
    assert colour_name(np.array([0.2, 0.9, 0.3])) == "green" and colour_name(np.array([0.9, 0.2, 0.9])) == "magenta"


def test_datamodule_generates_once_and_reads_as_coco(idx_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    args = dict(source_dir=str(idx_dir), train_size=8, val_size=4, test_size=4, val_pool=40, canvas=64,
                min_size=12, max_size=32, image_size=64, batch_size=4)
    dm = SceneDetectionDataModule(**args)
    dm.prepare_data()
    dm.setup()
    folder = dm.scene_dir
    assert folder.parent == tmp_path / "data" / "scenes" and (folder / "done").is_file()
    stamp = (folder / "annotations" / "instances_train.json").stat().st_mtime_ns
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 64, 64) and 0 <= images.min() and images.max() <= 1
    assert all(len(t["labels"]) and (t["labels"] >= 1).all() and (t["labels"] <= 10).all() for t in targets)
    again = SceneDetectionDataModule(**args)
    again.prepare_data()
    assert again.scene_dir == folder and (folder / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    assert SceneDetectionDataModule(**dict(args, scene_seed=1)).scene_dir != folder
