"""Tree crowns in real aerial photos: the annotated NEON images the DeepForest package ships (Weinstein et al.;
PyPI `deepforest`, MIT), as COCO detection data for fine-tuning and held-out AP.

The source is the package's `deepforest/data/` folder, read from an installed package, an unpacked folder or the
wheel itself (`pip download --no-deps deepforest==2.1.0`): four RGB photos with Pascal-VOC boxes, 951 crowns in all:

| photo | size | crowns | split |
|---|---|---|---|
| 2019_YELL_2_528000_4978000_image_crop2 | 2299 x 2472 | 574 | train |
| OSBS_029 | 400 x 400 | 61 | val |
| 2019_YELL_2_541000_4977000_image_crop | 1249 x 1035 | 279 | test |
| SOAP_061 | 400 x 400 | 37 | test |

Splits are whole photos, so no crown is seen in two splits. Each photo is cut into `tile` x `tile` pixel tiles (400,
DeepForest's own patch size): the fewest that cover it, spread evenly, so neighbouring tiles overlap by a few pixels
instead of edge tiles being padded. A box is clipped to each tile it meets and kept there when
at least `min_visible` of its area lies inside; the boxes this drops (crowns cut by a tile edge) are counted per
split in `info.json`, never silently. SOAP_061 labels crowns "Alive" / "Dead"; all crowns are one class, "tree".
OSBS_029's VOC file names a .tif; the package's identical-size .png beside it is read.

Bad input: a VOC file without a size, a box outside its photo (clipped to it), a box with no area (an error naming
the file and box), a photo whose size differs from its VOC file (an error).
"""
from __future__ import annotations

import hashlib
import io
import json
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from zoo._paths import zoo_home
from zoo.data._base import build_once, data_folders, locate
from zoo.data.coco import COCODetectionDataModule

SPLITS = {
    "2019_YELL_2_528000_4978000_image_crop2": "train",
    "OSBS_029": "val",
    "2019_YELL_2_541000_4977000_image_crop": "test",
    "SOAP_061": "test",
}
HOW = ("Get the photos with `pip download --no-deps deepforest==2.1.0 -d DIR` (or `pip install --no-deps "
       "deepforest`) and pass --data.init_args.source=DIR/deepforest-2.1.0-py3-none-any.whl (or the package's "
       "deepforest/data folder); an installed deepforest package and wheels in $ZOO_HOME/data/deepforest are found "
       "without it.")


@dataclass
class VOCImage:
    filename: str
    width: int
    height: int
    boxes: np.ndarray  # [N, 4] xmin, ymin, xmax, ymax in pixels, clipped to the image
    names: list[str]


def read_voc(text: str, where: str = "VOC file") -> VOCImage:
    """One Pascal-VOC annotation: the image's file name and size, and its boxes clipped to the image (VOC's 1-based
    corners are taken as pixel edges, as DeepForest reads them)."""
    root = ET.fromstring(text)
    size = root.find("size")
    if size is None or size.findtext("width") is None or size.findtext("height") is None:
        raise ValueError(f"{where}: no <size> with <width> and <height>")
    w, h = int(float(size.findtext("width"))), int(float(size.findtext("height")))
    boxes, names = [], []
    for i, obj in enumerate(root.iter("object")):
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{where}: object {i} has no <bndbox>")
        b = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        b = [min(max(b[0], 0), w), min(max(b[1], 0), h), min(max(b[2], 0), w), min(max(b[3], 0), h)]
        if b[2] <= b[0] or b[3] <= b[1]:
            raise ValueError(f"{where}: object {i} ({obj.findtext('name')}) has no area inside the "
                             f"{w} x {h} image after clipping: {b}")
        boxes.append(b)
        names.append(obj.findtext("name") or "")
    return VOCImage(root.findtext("filename") or "", w, h, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), names)


def tile_origins(length: int, tile: int) -> list[int]:
    """Tile starts along one side: the fewest tiles that cover it, spread evenly from 0 to length - tile (so
    neighbours overlap by the same few pixels instead of an edge tile being padded)."""
    if length <= tile:
        return [0]
    n = -(-length // tile)
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def tile_boxes(boxes: np.ndarray, x0: int, y0: int, tile_w: int, tile_h: int, min_visible: float
               ) -> tuple[np.ndarray, int]:
    """Boxes [N, 4] (xyxy pixels) inside one tile, in tile pixels: clipped, kept when at least `min_visible` of
    the box's area is inside; also the number of boxes that meet the tile but are dropped."""
    clipped = boxes - [x0, y0, x0, y0]
    clipped = np.stack([clipped[:, 0].clip(0, tile_w), clipped[:, 1].clip(0, tile_h),
                        clipped[:, 2].clip(0, tile_w), clipped[:, 3].clip(0, tile_h)], 1)
    inside = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    meets = inside > 0
    keep = meets & (inside >= min_visible * area)
    return clipped[keep], int((meets & ~keep).sum())


class _Source:
    """The package's data files, from a folder or from the wheel."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() else None

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(f"deepforest/data/{name}")
        return (self.path / name).read_bytes()

    def has(self, name: str) -> bool:
        if self.zip is not None:
            return f"deepforest/data/{name}" in self.zip.namelist()
        return (self.path / name).is_file()


def _find_source(folder: Path) -> Path | None:
    if folder.is_file() and folder.suffix == ".whl":
        return folder
    if (folder / "OSBS_029.xml").is_file():
        return folder
    if (folder / "deepforest" / "data" / "OSBS_029.xml").is_file():
        return folder / "deepforest" / "data"
    wheels = sorted(folder.glob("deepforest-*.whl")) if folder.is_dir() else []
    return wheels[-1] if wheels else None


def locate_source(source: str | None) -> Path:
    """The wheel or folder holding deepforest/data: `source`, $ZOO_HOME/data/deepforest, an installed package."""
    import importlib.util

    folders = [Path(source).expanduser()] if source else []
    folders += data_folders(None, "deepforest")
    spec = importlib.util.find_spec("deepforest")
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) / "data" for p in spec.submodule_search_locations]
    return locate(folders, _find_source, "the DeepForest photos (deepforest/data/*.xml + images)", HOW)


def write_treecrowns(source: Path, out_dir: Path, tile: int = 400, min_visible: float = 0.5) -> dict:
    """Tile the annotated photos into COCO JSON + PNG per split under out_dir; returns the counts (info.json)."""
    src = _Source(source)
    images: dict[str, list] = {s: [] for s in ("train", "val", "test")}
    anns: dict[str, list] = {s: [] for s in images}
    info = {"source": str(source), "tile": tile, "min_visible": min_visible,
            "splits": {s: {"photos": [], "tiles": 0, "boxes": 0, "dropped_at_tile_edges": 0} for s in images}}
    for stem, split in SPLITS.items():
        voc = read_voc(src.read(f"{stem}.xml").decode(), f"{stem}.xml")
        name = voc.filename if src.has(voc.filename) else f"{stem}.png"
        photo = np.asarray(Image.open(io.BytesIO(src.read(name))).convert("RGB"))
        if photo.shape[:2] != (voc.height, voc.width):
            raise ValueError(f"{name} is {photo.shape[1]} x {photo.shape[0]} but {stem}.xml says "
                             f"{voc.width} x {voc.height}")
        folder = out_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        stats = info["splits"][split]
        stats["photos"].append({"name": stem, "size": [voc.width, voc.height], "boxes": len(voc.boxes),
                                "labels": sorted(set(voc.names))})
        for y0 in tile_origins(voc.height, tile):
            for x0 in tile_origins(voc.width, tile):
                tw, th = min(tile, voc.width - x0), min(tile, voc.height - y0)
                boxes, dropped = tile_boxes(voc.boxes, x0, y0, tw, th, min_visible)
                image_id = len(images[split]) + 1
                file_name = f"{stem}_x{x0}_y{y0}.png"
                Image.fromarray(photo[y0:y0 + th, x0:x0 + tw]).save(folder / file_name)
                images[split].append({"id": image_id, "file_name": file_name, "width": tw, "height": th})
                for b in boxes:
                    anns[split].append({"id": len(anns[split]) + 1, "image_id": image_id, "category_id": 1,
                                        "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                                        "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0})
                stats["tiles"] += 1
                stats["boxes"] += len(boxes)
                stats["dropped_at_tile_edges"] += dropped
    (out_dir / "annotations").mkdir(exist_ok=True)
    for split in images:
        doc = {"images": images[split], "annotations": anns[split],
               "categories": [{"id": 1, "name": "tree", "supercategory": "plant"}],
               "info": {"description": "DeepForest's annotated NEON photos (PyPI deepforest, MIT), tiled by "
                                       "zoo.data.treecrowns"}}
        (out_dir / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    (out_dir / "info.json").write_text(json.dumps(info, indent=1))
    return info


class TreeCrownDataModule(COCODetectionDataModule):
    """Tree-crown detection in real aerial photos (see the module docstring): tiled once into
    $ZOO_HOME/data/treecrowns/<hash of the arguments and the source's name>, then read as COCO with Pix2seq's
    augmentation (`COCODetectionDataModule`).

    Args:
        source: the deepforest wheel or its data folder (default: $ZOO_HOME/data/deepforest, then an installed
            deepforest package).
        tile, min_visible: tile side in photo pixels, and the share of a box's area a tile must hold to keep it.
        image_size ... seed: as `COCODetectionDataModule`.
    """

    def __init__(self, source: str | None = None, tile: int = 400, min_visible: float = 0.5, image_size: int = 384,
                 min_scale: float = 0.3, max_scale: float = 2.0, batch_size: int = 8,
                 eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0):
        super().__init__(None, "train", "val", "test", image_size, min_scale, max_scale, batch_size, eval_batch_size,
                         num_workers, seed)
        self.save_hyperparameters()
        self.source, self.tile, self.min_visible = source, tile, min_visible

    def tile_dir(self, source: Path) -> Path:
        key = hashlib.sha256(json.dumps([source.name, self.tile, self.min_visible]).encode()).hexdigest()[:12]
        return zoo_home() / "data" / "treecrowns" / f"deepforest-{key}"

    def prepare_data(self) -> None:
        source = locate_source(self.source)
        folder = self.tile_dir(source)
        build_once(folder, lambda tmp: write_treecrowns(source, tmp, self.tile, self.min_visible))
        self.data_dir = str(folder)
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.data_dir is None:  # used without a Trainer (which calls prepare_data first)
            self.prepare_data()
        super().setup(stage)
