"""ShapeNet as occupancy, in the layout of the Occupancy Networks preprocessing (Mescheder et al. 2019), which the
shape papers' official pipelines start from (CvxNet's TFRecords were converted from it):

    ROOT/metadata.yaml                      optional: {synset: {id, name}}
    ROOT/<synset>/{train,val,test}.lst      model ids, one per line
    ROOT/<synset>/<model>/points.npz        points [N, 3] (float16), occupancies (np.packbits of N booleans)
    ROOT/<synset>/<model>/img_choy2016/000.jpg ... 023.jpg   the 3D-R2N2 renders, 137 x 137

`read_r2n2_views` reads the same renders in 3D-R2N2's own layout (ShapeNetRendering/, with their cameras).

Every `.npz` is read with `allow_pickle=False`, so nothing in a downloaded file is unpickled. ShapeNet needs a
registration (shapenet.org) and the preprocessed data is distributed by the Occupancy Networks authors; neither is
downloaded here, and a missing file is an error that says where it was looked for and what it should be.

Batches: (images [B, 3, size, size] in [0, 1], points [B, N, 3], occupancy [B, N], index [B]). Training draws a
random render (of 24) and `box_points` random points per model; evaluation uses render 0 and the first
`eval_points` points of each model, as the official evaluation uses one view and a fixed set of box points. The
layout has no labelled near-surface samples (CvxNet's GAPS-made TFRecords did), so training uses uniform box
points only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from zoo.data._base import InMemoryData, batch_generator

VIEWS = 24


def read_points(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """points [N, 3] (float32) and occupancy [N] (bool) from an Occupancy Networks `points.npz`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            pts, packed = z["points"], z["occupancies"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (each model folder needs the preprocessed points.npz)") from None
    except KeyError as e:
        raise ValueError(f"{path}: no {e} array; an Occupancy Networks points.npz holds 'points' and "
                         "'occupancies' (bit-packed)") from None
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"{path}: points has shape {pts.shape}, expected [N, 3]")
    occ = np.unpackbits(packed)[:len(pts)] if packed.dtype == np.uint8 else packed.astype(bool)
    if len(occ) != len(pts):
        raise ValueError(f"{path}: {len(occ)} occupancies for {len(pts)} points")
    return torch.from_numpy(pts.astype(np.float32)), torch.from_numpy(occ.astype(bool))


def read_render(path: Path, size: int) -> torch.Tensor:
    """One render as [3, size, size] in [0, 1] (bilinear resize; the official code resizes 137 -> 224)."""
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing render (img_choy2016/000.jpg ... 023.jpg in each model folder)")
    with Image.open(path) as im:
        x = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]


R2N2_FIELDS = ("azimuth", "elevation", "in_plane_rotation", "distance_ratio", "field_of_view")


def read_r2n2_views(model_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3D-R2N2 renders of one ShapeNet model in their distributed layout (ShapeNetRendering/<synset>/<model>/
    rendering/: the images listed in renderings.txt, 137 x 137 RGBA PNG, and rendering_metadata.txt, one line of
    azimuth, elevation, in-plane rotation (degrees), distance ratio and field of view per image): images
    [V, 4, 137, 137] in [0, 1] (alpha 0 off the object) and the cameras [V, 5] in `R2N2_FIELDS` order."""
    from PIL import Image

    folder = Path(model_dir)
    folder = folder / "rendering" if (folder / "rendering").is_dir() else folder
    listing, meta = folder / "renderings.txt", folder / "rendering_metadata.txt"
    for f in (listing, meta):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing (a 3D-R2N2 rendering folder holds renderings.txt, "
                                    "rendering_metadata.txt and the PNGs they list)")
    names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
    rows = [ln.split() for ln in meta.read_text().splitlines() if ln.strip()]
    if len(rows) != len(names) or any(len(r) != len(R2N2_FIELDS) for r in rows):
        raise ValueError(f"{meta}: expected {len(names)} lines of {len(R2N2_FIELDS)} numbers (one per image of "
                         f"renderings.txt), got {len(rows)} lines")
    images = []
    for n in names:
        with Image.open(folder / n) as im:
            images.append(torch.from_numpy(np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(images), torch.tensor([[float(v) for v in r] for r in rows])


class ShapeNetModels(Dataset):
    """One split's model folders; points and renders are read per batch from disk."""

    def __init__(self, folders: list[Path], image_size: int, box_points: int, eval_points: int, train: bool,
                 seed: int):
        self.folders, self.image_size, self.train, self.seed = folders, image_size, train, seed
        self.box_points, self.eval_points = box_points, eval_points

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, idx: list[int]):
        g = batch_generator(self.seed, idx)
        images, points, occ = [], [], []
        for i in idx:
            folder = self.folders[i]
            view = int(torch.randint(VIEWS, (), generator=g)) if self.train else 0
            images.append(read_render(folder / "img_choy2016" / f"{view:03d}.jpg", self.image_size))
            p, o = read_points(folder / "points.npz")
            if self.train:
                pick = torch.randint(len(p), (self.box_points,), generator=g)
            else:
                if len(p) < self.eval_points:
                    raise ValueError(f"{folder / 'points.npz'}: {len(p)} points, fewer than eval_points="
                                     f"{self.eval_points}")
                pick = torch.arange(self.eval_points)
            points.append(p[pick])
            occ.append(o[pick].float())
        return torch.stack(images), torch.stack(points), torch.stack(occ), torch.as_tensor(idx)


class ShapeNetOccupancyDataModule(InMemoryData):
    """ShapeNet renders and occupancy in the Occupancy Networks layout (module docstring).

    Args:
        data_dir: ROOT of the preprocessed data (holding one folder per synset).
        synsets: the categories (synset ids such as "02691156"); None: every folder of ROOT with split lists
            (the 13 classes of the papers' tables).
        image_size: renders are resized to this (official CvxNet: 224).
        box_points: training points per model and step (official: 1,024 box + 1,024 near-surface).
        eval_points: evaluation points per model (official: 100,000).
    """

    def __init__(self, data_dir: str = "", synsets: list[str] | None = None, image_size: int = 224,
                 box_points: int = 1024, eval_points: int = 100000, batch_size: int = 32, seed: int = 0,
                 num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.data_dir, self.synsets, self.image_size = data_dir, synsets, image_size
        self.box_points, self.eval_points = box_points, eval_points
        self.dims, self.in_chans = 3, 3

    def root(self) -> Path:
        root = Path(self.data_dir).expanduser() if self.data_dir else None
        if root is None or not root.is_dir():
            raise FileNotFoundError(
                f"ShapeNet (Occupancy Networks layout) not found at {self.data_dir!r}: pass "
                "--data.init_args.data_dir=ROOT, the folder of the preprocessed data (ROOT/<synset>/<model>/"
                "points.npz, img_choy2016/, <synset>/train.lst); ShapeNet itself needs a registration at shapenet.org")
        return root

    def split(self, name: str) -> list[Path]:
        root = self.root()
        synsets = self.synsets or sorted(p.name for p in root.iterdir() if (p / f"{name}.lst").is_file())
        if not synsets:
            raise FileNotFoundError(f"{root}: no <synset>/{name}.lst files; is this the Occupancy Networks layout?")
        folders = []
        for s in synsets:
            lst = root / s / f"{name}.lst"
            if not lst.is_file():
                raise FileNotFoundError(f"{lst}: missing split list (model ids, one per line)")
            ids = [line.strip() for line in lst.read_text().splitlines() if line.strip()]
            folders += [root / s / m for m in ids]
        missing = [f for f in folders if not f.is_dir()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} model folders listed in the {name} split are missing, e.g. "
                                    f"{missing[0]}")
        return folders

    def prepare_data(self) -> None:
        self.split("train")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        make = lambda name, train: ShapeNetModels(self.split(name), self.image_size, self.box_points,
                                                  self.eval_points, train, self.seed)
        self.train_set, self.val_set, self.test_set = make("train", True), make("val", False), make("test", False)
