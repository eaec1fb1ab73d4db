"""The Extended Yale Face Database B (Georghiades, Belhumeur & Kriegman 2001; Lee, Ho & Kriegman 2005), the data of
Deep Lambertian Networks, in its distributed layouts:

    ROOT/yaleBxx/yaleBxx_P00A+000E+00.pgm          the cropped set (CroppedYale/, 192 x 168, frontal pose only)
    ROOT/yaleBxx/yaleBxx_P00A-005E+10.pgm          ... subject xx, pose P00, light azimuth -5°, elevation +10°
    ROOT/yaleBxx/yaleBxx_P00_Ambient.pgm           the ambient image (no point light): skipped
    ROOT/yaleBxx/yaleBxx_P03A+035E+40.pgm          the full set (640 x 480, poses P00-P08) reads alike

Files marked bad by the distributors (`*.bad`) are not .pgm files and are ignored. The light's direction is given
by the file name; as a unit vector in the camera frame (x right, y up, z towards the camera) it is
(cos E sin A, sin E, cos E cos A), A the azimuth and E the elevation: x points towards positive azimuths (which
the distributors' notes put on the subject's right; not checked against real images here). Images are read with Pillow. The database needs a
request to its distributors, so nothing is downloaded; a missing folder is an error that says what was looked for.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.data._base import InMemoryData, Rows, data_folders, locate

NAME = re.compile(r"^yaleB(\d+)_P(\d+)A([+-]\d+)E([+-]\d+)\.pgm$", re.IGNORECASE)


def parse_name(name: str) -> tuple[int, int, float, float] | None:
    """(subject, pose, azimuth, elevation) in degrees from a Yale B file name; None for any other file (ambient
    images, .bad files, notes)."""
    m = NAME.match(name)
    if not m:
        return None
    return int(m[1]), int(m[2]), float(m[3]), float(m[4])


def light_direction(azimuth: torch.Tensor | float, elevation: torch.Tensor | float) -> torch.Tensor:
    """Unit light directions [..., 3] (x right, y up, z towards the camera) from angles in degrees."""
    a, e = torch.deg2rad(torch.as_tensor(azimuth, dtype=torch.float32)), torch.deg2rad(
        torch.as_tensor(elevation, dtype=torch.float32))
    return torch.stack([e.cos() * a.sin(), e.sin(), e.cos() * a.cos()], -1)


def read_pgm(path: Path) -> np.ndarray:
    """A grey image [H, W] uint8 (Pillow reads binary and ASCII PGM)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable PGM image ({e})") from None


@dataclass
class YaleB:
    """images [n, 1, H, W] uint8, subject ids [n], poses [n], azimuth and elevation [n] (degrees), light [n, 3]."""
    images: torch.Tensor
    subject: torch.Tensor
    pose: torch.Tensor
    azimuth: torch.Tensor
    elevation: torch.Tensor

    @property
    def light(self) -> torch.Tensor:
        return light_direction(self.azimuth, self.elevation)


def read_yaleb(root: Path, pose: int | None = 0) -> YaleB:
    """Every point-light image under root (subject folders, or the files directly), of one pose (None: all).
    Images of different sizes in one folder are an error naming both sizes."""
    rows, images, size = [], [], None
    for path in sorted(Path(root).rglob("*.pgm")):
        parsed = parse_name(path.name)
        if parsed is None or (pose is not None and parsed[1] != pose):
            continue
        img = read_pgm(path)
        if size is None:
            size, first = img.shape, path
        elif img.shape != size:
            raise ValueError(f"{path}: {img.shape[1]} x {img.shape[0]} pixels, but {first} has {size[1]} x {size[0]}; "
                             "mix the cropped (192 x 168) and full (640 x 480) sets in separate folders")
        rows.append(parsed)
        images.append(img)
    if not rows:
        raise FileNotFoundError(f"{root}: no Yale B images (yaleBxx_PppA±aaaE±ee.pgm) of pose {pose}")
    t = torch.tensor(rows, dtype=torch.float64)
    return YaleB(torch.from_numpy(np.stack(images))[:, None], t[:, 0].long(), t[:, 1].long(), t[:, 2].float(),
                 t[:, 3].float())


class YaleBDataModule(InMemoryData):
    """Extended Yale B faces with their light directions, for the Lambertian papers.

    Batches: (images [B, 1, H, W] in [0, 1], light [B, 3], subject [B]). The split holds out lights, as a relighting
    and one-shot identification protocol needs: images lit from more than `test_angle` degrees off the camera axis
    are the test set, and `val_size` of the rest (fixed seed) validation. Looks in `data_dir`, then
    `$ZOO_HOME/data/yale-b` (and their `CroppedYale` subfolders).
    """

    def __init__(self, data_dir: str | None = None, pose: int = 0, test_angle: float = 60.0, val_size: int = 200,
                 batch_size: int = 32, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.data_dir, self.pose, self.test_angle, self.val_size = data_dir, pose, test_angle, val_size

    def root(self) -> Path:
        return locate(data_folders(self.data_dir, "yale-b", subfolder="CroppedYale"),
                      lambda f: f if f.is_dir() and next(f.rglob("yaleB*_P*A*E*.pgm"), None) else None,
                      "Extended Yale B images (yaleBxx/yaleBxx_P00A+000E+00.pgm ...)",
                      "The database is distributed on request by its authors (the cropped set: CroppedYale.zip); "
                      "unpack it and pass --data.init_args.data_dir=DIR.")

    def prepare_data(self) -> None:
        self.root()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from zoo.data._base import split_off

        d = read_yaleb(self.root(), self.pose)
        off_axis = torch.rad2deg(torch.arccos(d.light[:, 2].clamp(-1, 1)))
        test = torch.nonzero(off_axis > self.test_angle)[:, 0]
        rest = torch.nonzero(off_axis <= self.test_angle)[:, 0]
        if len(test) == 0 or len(rest) <= self.val_size:
            raise ValueError(f"test_angle={self.test_angle} leaves {len(test)} test and {len(rest)} other images; "
                             "pick an angle between the lights present")
        keep, held = split_off(len(rest), self.val_size, self.seed)
        images = d.images.float() / 255.0

        def rows(i: torch.Tensor) -> Rows:
            return Rows(images[i], d.light[i], d.subject[i])

        self.train_set, self.val_set, self.test_set = rows(rest[keep]), rows(rest[held]), rows(test)
        self.subjects = sorted(set(d.subject.tolist()))


class YaleBSubjectsDataModule(InMemoryData):
    """Extended Yale B grouped by subject, for Deep Lambertian Networks: each row is one subject's frontal-pose
    images under the lights every subject has (so rows stack), centre-cropped to a square and resized to
    `size` x `size` (area averaging). Subjects, not lights, are held out: `val_subjects` and `test_subjects` of
    them (fixed seed) are never trained on, as one-shot identification of new people needs. Batches follow
    `zoo.data.lambertian`: (images [B, L, size, size], light [B, L, 3], subject [B], albedo, normal), the last two
    NaN (the database has no true albedo or normals)."""

    def __init__(self, data_dir: str | None = None, size: int = 32, val_subjects: int = 4, test_subjects: int = 10,
                 batch_size: int = 8, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.data_dir, self.size, self.val_subjects, self.test_subjects = data_dir, size, val_subjects, test_subjects

    root = YaleBDataModule.root
    prepare_data = YaleBDataModule.prepare_data

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        import torch.nn.functional as F

        from zoo.data._base import split_off

        d = read_yaleb(self.root(), 0)
        keys = [tuple(k) for k in torch.stack([d.azimuth, d.elevation], 1).tolist()]
        subjects = sorted(set(d.subject.tolist()))
        common = sorted(set.intersection(*({k for k, s in zip(keys, d.subject.tolist()) if s == subj}
                                           for subj in subjects)))
        if len(common) < 3:
            raise ValueError(f"{self.root()}: the subjects share only {len(common)} light directions; photometric "
                             "stereo needs at least 3")
        where = {(s, k): i for i, (s, k) in enumerate(zip(d.subject.tolist(), keys))}
        index = torch.tensor([[where[(s, k)] for k in common] for s in subjects])  # [S, L]
        H, W = d.images.shape[-2:]
        side = min(H, W)
        top, left = (H - side) // 2, (W - side) // 2
        crop = d.images[:, 0, top:top + side, left:left + side].float() / 255.0
        small = F.interpolate(crop[:, None], size=(self.size, self.size), mode="area")[:, 0]
        images = small[index]
        light = light_direction(*torch.tensor(common).T).expand(len(subjects), -1, -1).contiguous()
        nan = torch.full((len(subjects), self.size, self.size), float("nan"))
        objects = (images, light, torch.tensor(subjects), nan, nan[..., None].expand(-1, -1, -1, 3).contiguous())
        rest, test = split_off(len(subjects), self.test_subjects, self.seed)
        keep, val = split_off(len(rest), self.val_subjects, self.seed + 1)
        self.train_set, self.val_set, self.test_set = (Rows(*(t[i] for t in objects))
                                                        for i in (rest[keep], rest[val], test))
