"""The DeepForest tree-crown photos as tiled COCO data: VOC reading against hand-written files, the tiling grid and
box clipping by hand, and the DataModule on tiny photos in the package's layout, from a folder and from a wheel."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image
from treecrown_fixture import voc, write_treecrown_photos

from zoo.data.treecrowns import SPLITS, TreeCrownDataModule, read_voc, tile_boxes, tile_origins


@pytest.fixture
def photos(tmp_path):
    return write_treecrown_photos(tmp_path)


def test_read_voc_clips_and_refuses_empty_boxes():
    v = read_voc(voc("a.png", 10, 8, [(2, 1, 5, 4), (7, 6, 14, 12)]))
    assert (v.filename, v.width, v.height) == ("a.png", 10, 8)
    assert v.boxes.tolist() == [[2, 1, 5, 4], [7, 6, 10, 8]]  # the second clipped to the image
    with pytest.raises(ValueError, match="object 0 .*no area"):
        read_voc(voc("a.png", 10, 8, [(3, 3, 3, 5)]), "a.xml")
    with pytest.raises(ValueError, match="no area"):
        read_voc(voc("a.png", 10, 8, [(12, 1, 15, 4)]))  # wholly outside
    with pytest.raises(ValueError, match="<size>"):
        read_voc("<annotation><filename>a.png</filename></annotation>")


def test_tiles_cover_each_side_evenly():
    assert tile_origins(400, 400) == [0] and tile_origins(300, 400) == [0]
    assert tile_origins(1249, 400) == [0, 283, 566, 849]
    assert tile_origins(25, 10) == [0, 8, 15]
    for length in (401, 999, 2472):
        o = tile_origins(length, 400)
        assert o[0] == 0 and o[-1] == length - 400 and len(o) == -(-length // 400)


def test_tile_boxes_keep_boxes_mostly_inside():
    boxes = np.array([[2.0, 2, 6, 6], [8, 0, 14, 4], [9, 5, 20, 9]])
    kept, dropped = tile_boxes(boxes, 0, 0, 10, 10, 0.5)
    # box 2 has 2/6 of its area in the tile (dropped); box 3 has 1/11 (dropped)
    assert kept.tolist() == [[2, 2, 6, 6]] and dropped == 2
    kept, dropped = tile_boxes(boxes, 5, 0, 10, 10, 0.5)  # shifted: box 1 is 1/4 inside
    assert kept.tolist() == [[3, 0, 9, 4], [4, 5, 10, 9]] and dropped == 1


def _annotations(folder):
    return {s: json.loads((folder / "annotations" / f"instances_{s}.json").read_text())
            for s in ("train", "val", "test")}


def test_datamodule_from_a_folder_and_from_the_wheel(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    dm = TreeCrownDataModule(source=str(photos), tile=10, image_size=16, batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    out = tmp_path / "home" / "data" / "treecrowns"
    (folder,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert (folder / "done").is_file()
    ann = _annotations(folder)
    info = json.loads((folder / "info.json").read_text())
    assert [p["name"] for s in ("train", "val", "test") for p in info["splits"][s]["photos"]] == [
        n for s in ("train", "val", "test") for n, split in SPLITS.items() if split == s]
    assert info["splits"]["test"]["photos"][1]["labels"] == ["Alive", "Dead"]
    assert {c["name"] for a in ann.values() for c in a["categories"]} == {"tree"}
    # the 25 x 20 training photo: x origins 0, 8, 15 and y origins 0, 10 -> 6 tiles of 10 x 10
    assert len(ann["train"]["images"]) == 6 and {(i["width"], i["height"]) for i in ann["train"]["images"]} == {(10, 10)}
    first = [a["bbox"] for a in ann["train"]["annotations"] if a["image_id"] == 1]
    assert first == [[1, 1, 4, 5]]  # box (8, 2, 13, 7) has 2/5 of its width in the first tile: dropped there
    n_kept = sum(s["boxes"] for s in info["splits"].values())
    assert n_kept == sum(len(a["annotations"]) for a in ann.values())
    x, targets = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 16, 16) and len(targets) == 2

    wheel = tmp_path / "deepforest-9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for f in photos.iterdir():
            z.write(f, f"deepforest/data/{f.name}")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home2"))
    dm2 = TreeCrownDataModule(source=str(wheel), tile=10)
    dm2.prepare_data()
    (folder2,) = [p for p in (tmp_path / "home2" / "data" / "treecrowns").iterdir() if not p.name.startswith(".")]
    assert _annotations(folder2) == ann


def test_bad_photos_fail_with_advice(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    Image.fromarray(np.zeros((9, 10, 3), dtype=np.uint8)).save(photos / "OSBS_029.png")
    with pytest.raises(ValueError, match="OSBS_029.png is 10 x 9 but OSBS_029.xml says 10 x 10"):
        TreeCrownDataModule(source=str(photos), tile=10).prepare_data()
    assert not any((tmp_path / "home" / "data" / "treecrowns").iterdir())  # nothing half-written is left
    with pytest.raises(FileNotFoundError, match="pip download --no-deps deepforest"):
        TreeCrownDataModule(source=str(tmp_path / "nowhere")).prepare_data()
