"""Objects seen from one viewpoint under many point lights, for Deep Lambertian Networks: each identity has L images
of the same view under known lights, and derived renders also have the true albedo and surface normals.

Batches (one row per identity): (images [B, L, H, W] in [0, 1], light [B, L, 3] (unit, x right, y up, z towards
the camera), identity [B], albedo [B, H, W], normal [B, H, W, 3]); albedo and normal are NaN where the truth is
unknown (Yale B), and 0 off the object in renders.

`photometric_stereo` recovers albedo and normals from an identity's images (Woodham 1980, with shadowed pixels
left out): the multi-image estimate that trains the priors, exactly as it would on Yale B, where no other truth
exists.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from zoo.data._base import InMemoryData, Rows, build_once
from zoo.data.meshes import mesh_files, mesh_folder, normalise, read_mesh, read_or_skip
from zoo.data.render import lambertian, rasterise
from zoo.data.yaleb import light_direction

#: Yale B's light grid is denser; these 25 directions (azimuth x elevation, degrees) span the same frontal range
AZIMUTHS = (-60.0, -30.0, 0.0, 30.0, 60.0)
ELEVATIONS = (-40.0, -20.0, 0.0, 20.0, 40.0)


def photometric_stereo(images: torch.Tensor, light: torch.Tensor, shadow: float = 0.02, ridge: float = 1e-6
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the least-squares b = a n of v_l = bᵀℓ_l over the lights l where the pixel is lit (v > `shadow`):
    images [B, L, H, W], light [B, L, 3] -> albedo |b| [B, H, W] and unit normals [B, H, W, 3] (0 where fewer than
    three lights see the pixel). One batched 3 x 3 solve per pixel."""
    w = (images > shadow).to(images.dtype)
    M = torch.einsum("blhw,bli,blj->bhwij", w, light, light)
    r = torch.einsum("blhw,bli->bhwi", w * images, light)
    seen = w.sum(1) >= 3
    eye = torch.eye(3, dtype=images.dtype, device=images.device)
    b = torch.linalg.solve(M + ridge * eye, r.unsqueeze(-1)).squeeze(-1) * seen.unsqueeze(-1)
    a = b.norm(dim=-1)
    return a, b / a.clamp_min(1e-12).unsqueeze(-1)


def tilt(x_deg: torch.Tensor | float, y_deg: torch.Tensor | float) -> torch.Tensor:
    """The rotation [3, 3] by y_deg about the y axis after x_deg about the x axis (float64)."""
    a, b = math.radians(float(x_deg)), math.radians(float(y_deg))
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]], dtype=torch.float64)
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]], dtype=torch.float64)
    return ry @ rx


def frontal_index(light: torch.Tensor) -> int:
    """The light nearest the camera axis (the gallery light of one-shot identification)."""
    return int(light[:, 2].argmax())


class LitObjectsData(InMemoryData):
    """Base: subclasses' `load` returns the five tensors of a batch for every identity and the index tensors of the
    train, val and test identities; batches are rows of identities."""

    def load(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        objects, splits = self.load()
        self.train_set, self.val_set, self.test_set = (Rows(*(t[i] for t in objects)) for i in splits)


class LambertianObjectsDataModule(LitObjectsData):
    """Derived data (not Yale B): real meshes with real photographs as albedo, rendered as Lambertian surfaces
    (`zoo.data.render`) under `len(azimuths) x len(elevations)` point lights, with their true albedo and
    normals.

    The meshes are those in `data_dir`, else the OFF meshes of Debian's libcgal-demo, each centred and scaled
    into the view; the albedo textures are the 100 face photographs of scikit-image's `lfw_subset` (25 x 25,
    Labeled Faces in the Wild), resized to the image and laid on the object in image space (the camera never
    moves, so this is a fixed texture on the visible surface), scaled to albedo in [`min_albedo`, 1]. An
    identity is (mesh, pose, texture): the pose turns the mesh's own orientation by up to `max_tilt` degrees
    about the x and y axes, as faces in an aligned database differ a little in pose. As in face data, the shapes
    form a class the priors can learn and held-out identities are new instances of it: `meshes` meshes (drawn by
    `seed` among those whose silhouette covers at least `min_cover` of the image; None: all) are used in every
    split (`train_poses`, `val_poses` and `test_poses` identities per mesh), while the textures are split (the
    first 60 train, the next 20 validate, the last 20 test), so no held-out identity shares its albedo or pose
    with a training one. Identities whose silhouette covers less than `min_cover` of the image are dropped.
    Images are quantised to 8 bits, as a camera's would be. Rendered once and cached under
    $ZOO_HOME/data/lambertian/ keyed by the files and settings.
    """

    def __init__(self, data_dir: str | None = None, size: int = 32, azimuths: list[float] = list(AZIMUTHS),
                 elevations: list[float] = list(ELEVATIONS), max_tilt: float = 20.0, meshes: int | None = 12,
                 train_poses: int = 30, val_poses: int = 5, test_poses: int = 5, max_faces: int = 40000,
                 min_cover: float = 0.15, min_albedo: float = 0.2, batch_size: int = 8, seed: int = 0,
                 num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.data_dir, self.size, self.azimuths, self.elevations = data_dir, size, azimuths, elevations
        self.max_tilt, self.meshes = max_tilt, meshes
        self.train_poses, self.val_poses, self.test_poses = train_poses, val_poses, test_poses
        self.max_faces, self.min_cover, self.min_albedo = max_faces, min_cover, min_albedo
        self.names: list[str] = []
        self.split_codes: list[int] = []

    @property
    def poses(self) -> tuple[int, int, int]:
        return self.train_poses, self.val_poses, self.test_poses

    def lights(self) -> torch.Tensor:
        az, el = torch.meshgrid(torch.tensor(self.azimuths), torch.tensor(self.elevations), indexing="ij")
        return light_direction(az.reshape(-1), el.reshape(-1))

    @staticmethod
    def textures() -> torch.Tensor:
        """The 100 faces of scikit-image's lfw_subset [100, 25, 25] in [0, 1] (its other 100 images are not faces)."""
        from skimage.data import lfw_subset

        return torch.from_numpy(lfw_subset()[:100]).float()

    def cache_folder(self, files: list[Path]) -> Path:
        import hashlib

        from zoo._paths import zoo_home

        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
        h.update(repr((self.size, self.azimuths, self.elevations, self.max_tilt, self.meshes, self.poses,
                       self.max_faces,
                       self.min_cover, self.min_albedo, self.seed)).encode())
        return zoo_home() / "data" / "lambertian" / h.hexdigest()[:16]

    def _render(self, files: list[Path], out: Path) -> None:
        import json

        import torch.nn.functional as F
        from safetensors.torch import save_file
        from tqdm.auto import tqdm

        g = torch.Generator().manual_seed(self.seed)
        tex = F.interpolate(self.textures()[:, None], size=(self.size, self.size), mode="bilinear",
                            antialias=True, align_corners=False)[:, 0].clamp(0, 1)
        tex = self.min_albedo + (1 - self.min_albedo) * tex
        texture_ids = (torch.arange(60), torch.arange(60, 80), torch.arange(80, 100))
        light = self.lights().double()
        rows = {k: [] for k in ("images", "albedo", "normal", "split")}
        names, skipped = [], {}
        order = [files[i] for i in torch.randperm(len(files), generator=torch.Generator().manual_seed(self.seed))]
        for f in tqdm(order, desc="rendering lit objects (once)", unit="mesh"):
            if self.meshes is not None and len({n.split(" ")[0] for n in names}) >= self.meshes:
                break
            mesh = read_or_skip(f, read_mesh, self.max_faces, skipped)
            if mesh is None:
                continue
            mesh = normalise(mesh, 0.9)
            if rasterise(mesh, self.size, 1.0, two_sided=True).mask.double().mean() < self.min_cover:
                skipped[f.name] = f"covers less than min_cover={self.min_cover} of the image"
                continue
            for split, count in enumerate(self.poses):
                pool = texture_ids[split]
                for _ in range(count):
                    R = tilt(*((torch.rand(2, generator=g, dtype=torch.float64) * 2 - 1) * self.max_tilt))
                    r = rasterise(mesh, self.size, 1.0, R, two_sided=True)
                    if r.mask.double().mean() < self.min_cover:
                        continue
                    t = int(pool[torch.randint(len(pool), (1,), generator=g)])
                    albedo = tex[t].double() * r.mask
                    images = (lambertian(albedo, r.normal, light) * 255).round() / 255
                    rows["images"].append(images.float())
                    rows["albedo"].append(albedo.float())
                    rows["normal"].append(r.normal.float())
                    rows["split"].append(split)
                    names.append(f"{f.name} texture {t}")
        if not names:
            raise ValueError(f"no mesh in {files[0].parent} gave a usable render ({skipped})")
        save_file({"images": torch.stack(rows["images"]), "albedo": torch.stack(rows["albedo"]),
                   "normal": torch.stack(rows["normal"]), "light": light.float(),
                   "split": torch.tensor(rows["split"])}, str(out / "objects.safetensors"))
        (out / "objects.json").write_text(json.dumps({"identities": names, "skipped": skipped}, indent=1))

    def load(self):
        import json

        from safetensors.torch import load_file

        files = mesh_files(mesh_folder(self.data_dir))
        folder = self.cache_folder(files)
        build_once(folder, lambda tmp: self._render(files, tmp))
        t = load_file(str(folder / "objects.safetensors"))
        self.names = json.loads((folder / "objects.json").read_text())["identities"]
        self.split_codes = t["split"].tolist()  # 0 train, 1 val, 2 test, per identity in `names`
        n = len(t["images"])
        objects = (t["images"], t["light"].expand(n, -1, -1).contiguous(), torch.arange(n), t["albedo"],
                   t["normal"])
        splits = tuple(torch.nonzero(t["split"] == k)[:, 0] for k in range(3))
        if any(len(s) == 0 for s in splits):
            raise ValueError(f"{folder}: a split has no identities ({[len(s) for s in splits]} train/val/test); "
                             "lower min_cover or add meshes or poses")
        return objects, splits
