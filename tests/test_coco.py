"""COCO detection data (zoo.data.coco): the real instances JSON is read into normalised [ymin, xmin, ymax, xmax]
boxes; every Pix2seq augmentation moves the boxes exactly where it moves the pixels they enclose; the eval transform
maps back to the original pixels; batches have the documented shape; bad input fails with advice."""
import json

import pytest
import torch
from coco_fixture import CATEGORIES, IMAGES, write_coco_fixture

from zoo.data.coco import (PAD_VALUE, COCODetectionDataModule, boxes_to_pixels, eval_transform, hflip, load_image,
                           pad_bottom_right, random_crop, read_coco, scale_jitter, train_transform)


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    return write_coco_fixture(tmp_path_factory.mktemp("coco"))


def _records(coco_dir):
    return read_coco(coco_dir / "annotations" / "instances_train2017.json", coco_dir / "train2017")[0]


def _painted_box(image, category):
    """[ymin, xmin, ymax, xmax] in pixels of the pixels painted in the category's colour (None if none are)."""
    colour = torch.tensor(CATEGORIES[category][1]).float()[:, None, None] / 255
    mask = ((image - colour).abs() < 0.15).all(0)
    if not mask.any():
        return None
    rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    return torch.tensor([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]).float()


def _assert_aligned(image, boxes, labels, tol=1.6):
    """Each box (normalised to the image) covers its category's painted pixels, up to the blur of a resize."""
    size = torch.tensor(image.shape[-2:]).float().repeat(2)
    checked = 0
    for box, category in zip(boxes, labels.tolist()):
        px = box * size
        painted = _painted_box(image, category)
        if (px[2] - px[0]) * (px[3] - px[1]) < 9:  # shrunk to a few pixels: nothing pure is left to find
            continue
        assert painted is not None, f"category {category}: box {px.tolist()} but no painted pixels"
        assert (painted - px).abs().max() <= tol, f"category {category}: box {px.tolist()} vs pixels {painted.tolist()}"
        checked += 1
    return checked


def test_reads_the_coco_layout_into_normalised_yxyx(coco_dir):
    records = _records(coco_dir)
    assert [r["id"] for r in records] == [1, 2, 3] and (records[0]["height"], records[0]["width"]) == (48, 64)
    # image 1, object 1: bbox [x 4, y 6, w 20, h 14] on 48 x 64 -> [6/48, 4/64, 20/48, 24/64]
    assert torch.allclose(records[0]["boxes"][0], torch.tensor([6 / 48, 4 / 64, 20 / 48, 24 / 64]))
    assert records[1]["labels"].tolist() == [7, 44, 90] and records[1]["iscrowd"].tolist() == [False, False, True]
    assert records[0]["area"].tolist() == [280.0, 572.0]


def test_each_augmentation_keeps_boxes_on_their_pixels(coco_dir):
    records = _records(coco_dir)
    for r in records:
        image = load_image(r["path"])
        boxes, labels = r["boxes"], r["labels"]
        assert _assert_aligned(image, boxes, labels) == len(labels)
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            jittered = scale_jitter(image, 48, 0.3, 2.0, g)
            assert max(jittered.shape[-2:]) <= 96 and jittered.shape[-2] / jittered.shape[-1] == pytest.approx(
                image.shape[-2] / image.shape[-1], rel=0.1)
            _assert_aligned(jittered, boxes, labels)
            cropped, cboxes = random_crop(jittered, boxes, 32, g)
            assert max(cropped.shape[-2:]) <= 32
            _assert_aligned(cropped, cboxes, labels)
        flipped, fboxes = hflip(image, boxes)
        assert not torch.equal(fboxes, boxes) and _assert_aligned(flipped, fboxes, labels) == len(labels)
        padded, pboxes = pad_bottom_right(image, boxes, 80)
        assert padded.shape == (3, 80, 80) and _assert_aligned(padded, pboxes, labels) == len(labels)
        h, w = image.shape[-2:]
        assert (padded[:, h:] == PAD_VALUE).all() and (padded[:, :, w:] == PAD_VALUE).all()


def test_training_transform_keeps_boxes_aligned_and_drops_crowds(coco_dir):
    records = _records(coco_dir)
    sizes, flips = set(), 0
    for seed in range(12):
        for r in records:
            g = torch.Generator().manual_seed(seed)
            target = {k: r[k] for k in ("boxes", "labels", "iscrowd", "area")}
            image, out = train_transform(load_image(r["path"]), target, 48, generator=g)
            assert image.shape == (3, 48, 48) and 0 <= image.min() and image.max() <= 1
            assert not out["iscrowd"].any() and len(out["boxes"]) == len(out["labels"]) == len(out["area"])
            _assert_aligned(image, out["boxes"], out["labels"])
            h, w = out["unpadded_size"].tolist()
            sizes.add((h, w))
            assert (image[:, h:] == PAD_VALUE).all() and (image[:, :, w:] == PAD_VALUE).all()
            # a non-crowd object whose colour is clearly visible must have kept its box
            crowd = set(r["labels"][r["iscrowd"]].tolist())
            for category in set(r["labels"].tolist()) - crowd:
                painted = _painted_box(image, category)
                if painted is not None and (painted[2] - painted[0]) * (painted[3] - painted[1]) >= 9:
                    assert category in out["labels"].tolist()
            red = out["boxes"][out["labels"] == 1]
            flips += int(r["id"] == 1 and len(red) and red[0, 1] > 0.3)  # unflipped, image 1's red box starts at 4/64
    assert len(sizes) > 10 and flips > 0  # the jitter and the flip really happened


def test_eval_transform_maps_back_to_original_pixels(coco_dir):
    for r in _records(coco_dir):
        image = load_image(r["path"])
        target = {"boxes": r["boxes"], "orig_size": torch.tensor(image.shape[-2:])}
        out_image, out = eval_transform(image, target, 80)
        assert out_image.shape == (3, 80, 80) and max(out["unpadded_size"].tolist()) == 80
        _assert_aligned(out_image, out["boxes"], r["labels"], tol=2.1)
        xyxy = boxes_to_pixels(out["boxes"], out, 80)
        h, w = image.shape[-2:]
        expect = r["boxes"][:, [1, 0, 3, 2]] * torch.tensor([w, h, w, h])
        assert torch.allclose(xyxy, expect, atol=1e-4)


def test_an_image_without_annotations_keeps_empty_points(coco_dir):
    """COCO lists images without annotations (48 in val2017): with polygons read they give empty [0, 2M] points in
    both transforms rather than an error."""
    from zoo.data.coco import COCODetection

    data = json.loads((coco_dir / "annotations" / "instances_val2017.json").read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 3]
    file = coco_dir / "annotations" / "instances_empty.json"
    file.write_text(json.dumps(data))
    for train in (False, True):
        ds = COCODetection(file, coco_dir / "val2017", 64, train, points=("polygon",), max_points=16)
        if not train:  # training skips images without objects
            _, target = ds[2]
            assert target["polygon"].shape == (0, 32) and target["boxes"].shape == (0, 4)
        assert all(len(t["polygon"]) == len(t["labels"]) for _, t in (ds[i] for i in range(len(ds))))


def test_datamodule_batches(coco_dir):
    dm = COCODetectionDataModule(str(coco_dir), image_size=48, batch_size=2, eval_batch_size=3)
    dm.prepare_data()
    dm.setup()
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 48, 48) and len(targets) == 2
    assert set(targets[0]) == {"boxes", "labels", "iscrowd", "area", "image_id", "orig_size", "unpadded_size"}
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (3, 3, 48, 48) and targets[1]["iscrowd"].tolist() == [False, False, True]
    assert dm.categories == {c: n for c, (n, _) in CATEGORIES.items()}


def test_bad_input_fails_with_advice(tmp_path, coco_dir):
    with pytest.raises(FileNotFoundError, match=r"(?s)instances_train2017.json.*cocodataset.org"):
        COCODetectionDataModule(str(tmp_path / "nowhere")).prepare_data()
    ann = json.loads((coco_dir / "annotations" / "instances_train2017.json").read_text())
    bad = tmp_path / "bad"
    (bad / "annotations").mkdir(parents=True)
    (bad / "train2017").mkdir()
    path = bad / "annotations" / "instances_train2017.json"
    path.write_text(json.dumps(ann))
    with pytest.raises(FileNotFoundError, match=r"3 of the 3 images .* are not in"):
        read_coco(path, bad / "train2017")
    unknown = {**ann, "annotations": [{**ann["annotations"][0], "category_id": 12}]}
    path.write_text(json.dumps(unknown))
    with pytest.raises(ValueError, match="category_id 12"):
        read_coco(path, coco_dir / "train2017")
    negative = {**ann, "annotations": [{**ann["annotations"][0], "bbox": [1, 1, -3, 4]}]}
    path.write_text(json.dumps(negative))
    with pytest.raises(ValueError, match="negative width"):
        read_coco(path, coco_dir / "train2017")
    assert len(IMAGES) == 3
