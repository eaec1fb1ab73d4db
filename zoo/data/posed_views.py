"""Shaded views of an articulated body from many cameras (derived data, for Cerberus): the capsule body of
`zoo.data.articulated`, skinned to a BVH skeleton and posed by its motion capture, rendered by the z-buffer of
`zoo.data.render` from `views` cameras per frame.

Each frame's posed mesh is centred on its bounding box; a camera turns it about the body's vertical axis by an
azimuth drawn uniformly from [0°, 360°) and tilts it by an elevation drawn from [0°, `max_elevation`], then looks at
it orthographically (`zoo.data.render`: down −z at [−extent, extent]²). camera_from_body = Rx(elev) C Rz(az) with C
taking the body's z-up, −y-facing frame to the camera's y-up, +z-towards-the-viewer one. Pixels are Lambertian under
one light fixed in the camera's frame, `ambient + (1 − ambient) max(0, n·l)` on the body and 0 off it, stored in 8
bits. Kept beside each image: the mask, the depth of the visible surface (camera z), the body part showing there
(the main skinning part of the visible face's first corner; −1 off the body) and the rotation, so that evaluation
can map a pixel of one view to the same surface point in another.

Items are triples from one split: (frame f, view a), (f, another view b) and (another frame f', view a): the pairs
Cerberus' viewpoint and articulation invariances compare. The pairing is a fixed function of the item's index.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from zoo.data._base import InMemoryData
from zoo.data.articulated import CMU_PARTS, ArticulatedBodyDataModule, part_transforms, skin
from zoo.data.meshes import Mesh
from zoo.data.render import rasterise

#: the body's z-up, −y-facing frame -> the camera's (x right, y up, z towards the viewer)
BODY_TO_CAMERA = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)


def camera_rotation(azimuth: torch.Tensor, elevation: torch.Tensor) -> torch.Tensor:
    """camera_from_body rotations [..., 3, 3] for azimuths and elevations in degrees (module docstring)."""
    a, e = torch.deg2rad(azimuth.double()), torch.deg2rad(elevation.double())
    z, o = torch.zeros_like(a), torch.ones_like(a)
    Rz = torch.stack([torch.stack([a.cos(), -a.sin(), z], -1), torch.stack([a.sin(), a.cos(), z], -1),
                      torch.stack([z, z, o], -1)], -2)
    Rx = torch.stack([torch.stack([o, z, z], -1), torch.stack([z, e.cos(), -e.sin()], -1),
                      torch.stack([z, e.sin(), e.cos()], -1)], -2)
    return Rx @ BODY_TO_CAMERA @ Rz


def shade(normal: torch.Tensor, mask: torch.Tensor, light: torch.Tensor, ambient: float) -> torch.Tensor:
    """Lambertian intensity with an ambient floor, 0 off the object: normal [..., 3], mask [...], light [3]."""
    lit = ambient + (1 - ambient) * (normal @ light.to(normal.dtype)).clamp_min(0)
    return torch.where(mask, lit, torch.zeros_like(lit))


def default_light() -> torch.Tensor:
    """The light's direction in the camera's frame: from the viewer's upper left."""
    return torch.nn.functional.normalize(torch.tensor([-0.4, 0.6, 1.0], dtype=torch.float64), dim=0)


class PosedViews(torch.utils.data.Dataset):
    """Triples of views of one split (module docstring). Items are dicts of batched tensors: `images` [B, 3, H, W]
    in [0, 1], `mask` [B, 3, H, W] (bool), `depth` [B, 3, H, W] (camera z; −inf off the body), `parts` [B, 3, H, W]
    (long, −1 off the body), `rotation` [B, 3, 3, 3] (camera_from_body) and `index` [B, 3, 2] (frame, view)."""

    def __init__(self, cache: dict[str, torch.Tensor]):
        self.c = cache
        self.frames, self.views = cache["images"].shape[:2]

    def __len__(self) -> int:
        return self.frames * self.views

    def triple(self, i: torch.Tensor) -> torch.Tensor:
        """(frame, view) [B, 3, 2] of items i: (f, a), (f, b ≠ a), (f', a) with f' half the clip away."""
        F, V = self.frames, self.views
        f, a = i // V, i % V
        b = (a + 1 + f % max(1, V - 1)) % V if V > 1 else a
        f2 = (f + max(1, F // 2)) % F
        return torch.stack([torch.stack([f, a], -1), torch.stack([f, b], -1), torch.stack([f2, a], -1)], 1)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        fv = self.triple(torch.as_tensor(idx))
        f, v = fv[..., 0], fv[..., 1]
        out = {k: self.c[k][f, v] for k in ("mask", "depth", "parts", "rotation")}
        out["images"] = self.c["images"][f, v].float() / 255
        out["parts"] = out["parts"].long()
        out["index"] = fv
        return out


class PosedViewsDataModule(ArticulatedBodyDataModule):
    """Shaded views of the capsule body posed by motion capture (module docstring): derived data for Cerberus, by
    default the CMU subject 01 clips of Debian's assimp-testmodels (`apt-get install assimp-testmodels`).

    Frames as `ArticulatedBodyDataModule`: every `train_every`-th of `train_clip` for training, frames between them
    for validation, every `test_every`-th of `test_clip` (a motion never trained on) for testing. Each frame is
    rendered from `views` cameras at `size` x `size` pixels over [−extent, extent]²; renders are made once and
    cached under $ZOO_HOME/data/posed_views/ keyed by the clips and settings.

    Args:
        bvh_dir, train_clip, test_clip, train_every, val_every, test_every: the frames (as for NASA's data).
        views: cameras per frame; max_elevation: their largest tilt in degrees; size, extent: the image.
        ambient: the shading's floor; parts, res, height, blend, skin_softness: the body (`capsule_body`).
    """

    def __init__(self, bvh_dir: str | None = None, train_clip: str = "01_01.bvh", test_clip: str = "01_03.bvh",
                 train_every: int = 8, val_every: int = 120, test_every: int = 45, views: int = 4,
                 max_elevation: float = 30.0, size: int = 32, extent: float = 0.55, ambient: float = 0.25,
                 parts: dict[str, list] | None = None, res: int = 32, height: float = 0.9, blend: float = 0.012,
                 skin_softness: float = 0.015, batch_size: int = 8, seed: int = 0, num_workers: int = 0):
        InMemoryData.__init__(self, batch_size=batch_size, seed=seed, num_workers=num_workers)
        if views < 2:
            raise ValueError(f"views={views}: Cerberus compares two views of each frame, so at least 2 are needed")
        self.bvh_dir, self.train_clip, self.test_clip = bvh_dir, train_clip, test_clip
        self.train_every, self.val_every, self.test_every = train_every, val_every, test_every
        self.views, self.max_elevation, self.size, self.extent, self.ambient = views, max_elevation, size, extent, ambient
        self.parts = {k: ([tuple(b) for b in v[0]], float(v[1])) for k, v in parts.items()} if parts else CMU_PARTS
        self.res, self.height, self.blend, self.skin_softness = res, height, blend, skin_softness
        self.body = None

    def cache_folder(self) -> Path:
        return self.cache_path("posed_views", (self.train_every, self.val_every, self.test_every, self.views,
                                               self.max_elevation, self.size, self.extent, self.ambient,
                                               sorted(self.parts.items()), self.res, self.height, self.blend,
                                               self.skin_softness, self.seed))

    def render_frames(self, posed: torch.Tensor, faces: torch.Tensor, vertex_parts: torch.Tensor,
                      g: torch.Generator, desc: str) -> dict[str, torch.Tensor]:
        """Render posed vertices [F, V, 3] from `views` random cameras each: the cache's arrays for one split."""
        from tqdm.auto import tqdm

        n = len(posed)
        az = torch.rand(n, self.views, generator=g, dtype=torch.float64) * 360
        el = torch.rand(n, self.views, generator=g, dtype=torch.float64) * self.max_elevation
        R = camera_rotation(az, el)
        light = default_light()
        S = self.size
        out = {"images": torch.zeros(n, self.views, S, S, dtype=torch.uint8),
               "mask": torch.zeros(n, self.views, S, S, dtype=torch.bool),
               "depth": torch.full((n, self.views, S, S), -math.inf),
               "parts": torch.full((n, self.views, S, S), -1, dtype=torch.int8), "rotation": R.float()}
        with tqdm(total=n * self.views, desc=f"rendering {desc} views (once)", unit="view") as bar:
            for f in range(n):
                lo, hi = posed[f].amin(0), posed[f].amax(0)
                mesh = Mesh(posed[f] - (lo + hi) / 2, faces)
                for v in range(self.views):
                    r = rasterise(mesh, S, self.extent, R[f, v])
                    out["images"][f, v] = (shade(r.normal, r.mask, light, self.ambient) * 255).round().to(torch.uint8)
                    out["mask"][f, v], out["depth"][f, v] = r.mask, r.depth.float()
                    label = vertex_parts[faces[r.face.clamp_min(0), 0]]
                    out["parts"][f, v] = torch.where(r.mask, label, -1).to(torch.int8)
                    bar.update()
        return out

    def _label(self, out: Path) -> None:
        import numpy as np

        g = torch.Generator().manual_seed(self.seed)
        arrays: dict[str, np.ndarray] = {}
        for split, skel, body, motion in self.split_motions():
            posed = skin(body, part_transforms(body, skel, motion))
            r = self.render_frames(posed, body.mesh.faces, body.labels, g, split)
            arrays |= {f"{split}/{k}": v.numpy() for k, v in r.items()}
        np.savez(out / "views.npz", **arrays)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        for split, cache in self.cached_splits("views.npz")[1].items():
            setattr(self, f"{split}_set", PosedViews(cache))
