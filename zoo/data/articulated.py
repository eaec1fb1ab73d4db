"""Articulated bodies: a solid skinned to a BVH skeleton and posed by its motion capture (derived data, for NASA).

The body is built on the skeleton's rest pose: every part is one or more capsules around its bones (a radius per
part), the parts joined by a smooth minimum of their distance fields so that the surface blends across the joints,
meshed by marching cubes (a closed, consistently wound solid). Each vertex is skinned to the parts by a softmin of
its distances to them (linear blend skinning weights: near a joint, shared by the two parts that meet there). A
frame of motion poses the mesh by linear blend skinning, v' = Σ_k w_vk M_k v, where M_k is part k's rest-to-posed
transform from forward kinematics, with the root moved to the origin (its rotation kept). So the posed solids are
not piecewise rigid: near the joints the surface bends, stretches and creases as skinned characters do, which is
what NASA's deformable model is for. Occupancy is labelled exactly by winding numbers of the posed mesh.

Coordinates: BVH files are y-up (CMU: inches / 0.45); bodies are z-up, face -y, and scaled to `height`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from zoo.data.bvh import Skeleton, forward_kinematics, read_bvh
from zoo.data._base import InMemoryData, batch_generator, draw_cached
from zoo.data.meshes import Mesh, marching_cubes

#: part -> (bones as (from joint, to joint) in the CMU skeleton's names, capsule radius in body heights / 0.9)
CMU_PARTS: dict[str, tuple[list[tuple[str, str]], float]] = {
    "Hips": ([("LeftUpLeg", "RightUpLeg"), ("Hips", "LowerBack")], 0.085),
    "LowerBack": ([("LowerBack", "Spine")], 0.1),
    "Spine": ([("Spine", "Spine1")], 0.1),
    "Spine1": ([("Spine1", "Neck")], 0.11),
    "Head": ([("Neck", "Head"), ("Head", "Head_end")], 0.07),
    **{k: v for side, s in (("Left", "L"), ("Right", "R")) for k, v in {
        f"{side}Shoulder": ([(f"{side}Shoulder", f"{side}Arm")], 0.06),
        f"{side}Arm": ([(f"{side}Arm", f"{side}ForeArm")], 0.045),
        f"{side}ForeArm": ([(f"{side}ForeArm", f"{side}Hand")], 0.037),
        f"{side}Hand": ([(f"{side}Hand", f"{s}Fingers_end")], 0.03),
        f"{side}UpLeg": ([(f"{side}UpLeg", f"{side}Leg")], 0.065),
        f"{side}Leg": ([(f"{side}Leg", f"{side}Foot")], 0.05),
        f"{side}Foot": ([(f"{side}Foot", f"{side}ToeBase_end")], 0.038),
    }.items()},
}
_Y_UP_TO_Z_UP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


@dataclass
class Body:
    """A skinned solid: the rest mesh, skinning weights [V, K], the parts' names and BVH joints (whose transforms
    move them), the bones' rest end points [S, 2, 3] and owning part [S], and the body-from-BVH similarity [4, 4]."""
    mesh: Mesh
    weights: torch.Tensor
    parts: tuple[str, ...]
    joints: tuple[int, ...]
    bones: torch.Tensor
    bone_part: torch.Tensor
    radii: torch.Tensor
    from_bvh: torch.Tensor
    rest: torch.Tensor  # the BVH rest pose's world transforms [J, 4, 4]
    root: int

    @property
    def labels(self) -> torch.Tensor:
        """Each vertex's main part [V] (the argmax of its skinning weights)."""
        return self.weights.argmax(1)


def segment_distances(x: torch.Tensor, bones: torch.Tensor) -> torch.Tensor:
    """Distances [P, S] from points [P, 3] to segments bones [S, 2, 3] (a zero-length bone is its point)."""
    a, b = bones[:, 0], bones[:, 1]
    ab = b - a
    t = (((x[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0, 1)
    return (x[:, None] - (a + t[..., None] * ab)).norm(dim=-1)


def part_distances(x: torch.Tensor, body_bones: torch.Tensor, bone_part: torch.Tensor, radii: torch.Tensor,
                   parts: int) -> torch.Tensor:
    """Signed distances [P, K] from points to each part's capsules (negative inside)."""
    d = segment_distances(x, body_bones) - radii
    out = torch.full((len(x), parts), float("inf"), dtype=d.dtype)
    return out.scatter_reduce(1, bone_part.expand(len(x), -1), d, "amin")


def capsule_body(skel: Skeleton, parts: dict[str, tuple[list[tuple[str, str]], float]] = CMU_PARTS,
                 height: float = 0.9, res: int = 48, blend: float = 0.012, skin_softness: float = 0.015) -> Body:
    """The skinned solid of `skel`'s rest pose (module docstring). `blend`: the smooth minimum's width between
    capsules; `skin_softness`: the softmin temperature of the skinning weights (both in body units)."""
    names = list(parts)
    joints, bones, bone_part, radii = [], [], [], []
    for k, name in enumerate(names):
        segments, r = parts[name]
        joints.append(skel.index([name])[0])
        for a, b in segments:
            bones.append(skel.index([a, b])), bone_part.append(k), radii.append(r)
    rest = forward_kinematics(skel, torch.zeros(1, skel.num_channels, dtype=torch.float64))[0]
    up = rest[:, :3, 3] @ _Y_UP_TO_Z_UP.T
    scale = height / (up[:, 2].max() - up[:, 2].min()).item()
    root = skel.parents.index(-1)
    from_bvh = torch.eye(4, dtype=torch.float64)
    from_bvh[:3, :3] = _Y_UP_TO_Z_UP * scale
    from_bvh[:3, 3] = -(from_bvh[:3, :3] @ rest[root, :3, 3])
    pos = rest[:, :3, 3] @ from_bvh[:3, :3].T + from_bvh[:3, 3]
    seg = pos[torch.tensor(bones)]  # [S, 2, 3]
    part_of = torch.tensor(bone_part)
    r = torch.tensor(radii, dtype=torch.float64)
    lo = (seg.amin((0, 1)) - r.max() - 2 * blend)
    hi = (seg.amax((0, 1)) + r.max() + 2 * blend)
    half, centre = (hi - lo).max().item() / 2, (hi + lo) / 2
    g = (torch.arange(res, dtype=torch.float64) + 0.5) / res * 2 * half - half
    grid = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) + centre
    d = segment_distances(grid, seg) - r
    field = blend * torch.logsumexp(-d / blend, 1)  # minus the smooth minimum: > 0 inside
    surface = marching_cubes(field.reshape(res, res, res), level=0.0, half=half)
    mesh = Mesh(surface.vertices + centre, surface.faces)
    w = torch.softmax(-part_distances(mesh.vertices, seg, part_of, r, len(names)) / skin_softness, 1)
    return Body(mesh, w, tuple(names), tuple(joints), seg, part_of, r, from_bvh, rest, root)


def part_transforms(body: Body, skel: Skeleton, motion: torch.Tensor) -> torch.Tensor:
    """Each part's rest-to-posed transform [F, K, 4, 4] in body coordinates, the posed root at the origin."""
    world = forward_kinematics(skel, motion)
    j = list(body.joints)
    S, S_inv = body.from_bvh, torch.linalg.inv(body.from_bvh)
    M = S @ world[:, j] @ torch.linalg.inv(body.rest[j]) @ S_inv
    root = (S @ world[:, body.root])[:, :3, 3]
    M[:, :, :3, 3] -= root[:, None]
    return M


def skin(body: Body, transforms: torch.Tensor) -> torch.Tensor:
    """Posed vertices [F, V, 3] by linear blend skinning with transforms [F, K, 4, 4]."""
    v = body.mesh.vertices
    blended = torch.einsum("vk,fkij->fvij", body.weights, transforms[..., :3, :])  # [F, V, 3, 4]
    return (blended[..., :3] @ v[None, :, :, None]).squeeze(-1) + blended[..., 3]


CMU_CLIPS = Path("/usr/share/assimp/models/BVH")


class PosedFrames(torch.utils.data.Dataset):
    """Labelled frames of one split. Items are dicts of batched tensors: `points` [B, N, 3] (box samples first),
    `occupancy` [B, N], `transforms` [B, K, 4, 4] (bone-from-world: posed points to each part's rest frame),
    `root` [B, 3], `joints` [B, K, 3] (each part's joint, posed), `vertices` [B, V, 3] (the posed mesh) and
    `vertex_parts` [V] per item (each vertex's main part), and `frame` [B]. With `draw` = (box, near), the points
    are drawn afresh from each frame's cached pools (seeded by the batch's indices), as the official loader draws
    from its per-frame pools at every step; without it, every item keeps its fixed points (evaluation)."""

    POOLS = ("box_points", "box_inside", "near_points", "near_inside")

    def __init__(self, cache: dict[str, torch.Tensor], vertex_parts: torch.Tensor,
                 draw: tuple[int, int] | None = None, seed: int = 0):
        self.c, self.vertex_parts, self.draw, self.seed = cache, vertex_parts, draw, seed

    def __len__(self) -> int:
        return len(self.c["transforms"])

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        i = torch.as_tensor(idx)
        out = {k: v[i] for k, v in self.c.items() if k not in self.POOLS}
        if self.draw is not None:
            out["points"], out["occupancy"] = draw_cached(self.c, i, *self.draw, batch_generator(self.seed, idx))
        out["vertex_parts"] = self.vertex_parts.expand(len(i), -1)
        out["frame"] = i
        return out


class ArticulatedBodyDataModule(InMemoryData):
    """A capsule body skinned to a BVH skeleton and posed by motion capture (module docstring): derived data for
    NASA, by default the CMU subject 01 clips of Debian's assimp-testmodels (`apt-get install assimp-testmodels`).

    Training frames are every `train_every`-th frame of `train_clip`; validation frames sit between them (offset
    `train_every // 2`, every `val_every`-th); test frames are every `test_every`-th frame of `test_clip`, a motion
    never trained on (NASA's leave-one-motion-out split). Each training frame caches `cached_points` uniform samples
    in the posed body's bounding box (scaled by 1.1 about its centre) and as many near-surface samples (surface
    samples moved by N(0, `noise`²)), of which every step draws `box_points` and `surface_points` afresh (the
    official loader draws 1,024 + 1,024 from pools of 100,000 + 100,000); each evaluation frame keeps `eval_points`
    box samples (NASA's IoU uses box samples only). Labels are winding numbers of the posed mesh, computed once and
    cached under $ZOO_HOME/data/articulated/ keyed by the clips and settings.

    Args:
        bvh_dir: the folder with the clips (default: Debian's /usr/share/assimp/models/BVH).
        parts: part -> [bones as [from, to] joint names, capsule radius]; default the CMU skeleton's 19 parts.
        res, height, blend, skin_softness: the body (`capsule_body`).
    """

    def __init__(self, bvh_dir: str | None = None, train_clip: str = "01_01.bvh", test_clip: str = "01_03.bvh",
                 train_every: int = 12, val_every: int = 120, test_every: int = 90, box_points: int = 1024,
                 surface_points: int = 1024, cached_points: int = 4096, eval_points: int = 8192, noise: float = 0.01,
                 parts: dict[str, list] | None = None, res: int = 48, height: float = 0.9, blend: float = 0.012,
                 skin_softness: float = 0.015, batch_size: int = 12, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.bvh_dir, self.train_clip, self.test_clip = bvh_dir, train_clip, test_clip
        self.train_every, self.val_every, self.test_every = train_every, val_every, test_every
        self.box_points, self.surface_points, self.eval_points, self.noise = box_points, surface_points, eval_points, noise
        self.cached_points = cached_points
        self.parts = {k: ([tuple(b) for b in v[0]], float(v[1])) for k, v in parts.items()} if parts else CMU_PARTS
        self.res, self.height, self.blend, self.skin_softness = res, height, blend, skin_softness
        self.body: Body | None = None

    def clip(self, name: str) -> Path:
        folder = Path(self.bvh_dir).expanduser() if self.bvh_dir else CMU_CLIPS
        path = folder / name
        if not path.is_file():
            how = ("apt-get install assimp-testmodels (Debian/Ubuntu) for the CMU clips, or pass "
                   "--data.init_args.bvh_dir=FOLDER" if not self.bvh_dir else "check the clip names")
            raise FileNotFoundError(f"{path}: no such BVH clip; {how}")
        return path

    def build_body(self, skel: Skeleton) -> Body:
        return capsule_body(skel, self.parts, self.height, self.res, self.blend, self.skin_softness)

    def cache_folder(self) -> Path:
        return self.cache_path("articulated", (self.train_every, self.val_every, self.test_every, self.cached_points,
                                               self.eval_points, self.noise,
                                               sorted(self.parts.items()), self.res, self.height, self.blend,
                                               self.skin_softness, self.seed))

    def cache_path(self, kind: str, settings: tuple) -> Path:
        """$ZOO_HOME/data/<kind>/<key>: the key hashes both clips' names and bytes and the settings."""
        import hashlib

        from zoo._paths import zoo_home

        h = hashlib.sha256()
        for name in (self.train_clip, self.test_clip):
            h.update(name.encode() + hashlib.sha256(self.clip(name).read_bytes()).digest())
        h.update(repr(settings).encode())
        return zoo_home() / "data" / kind / h.hexdigest()[:16]

    def frames(self) -> dict[str, tuple[str, list[int]]]:
        n_train = read_bvh(self.clip(self.train_clip))[1].shape[0]
        n_test = read_bvh(self.clip(self.test_clip))[1].shape[0]
        half = max(1, self.train_every // 2)
        return {"train": (self.train_clip, list(range(0, n_train, self.train_every))),
                "val": (self.train_clip, list(range(half, n_train, self.val_every))),
                "test": (self.test_clip, list(range(0, n_test, self.test_every)))}

    def split_motions(self):
        """(split, skeleton, body, motion [F, channels] of the split's frames) for train, val and test: the body is
        built once on the training clip's skeleton, which every clip must share."""
        skel = read_bvh(self.clip(self.train_clip))[0]
        body = self.build_body(skel)
        for split, (name, frames) in self.frames().items():
            clip_skel, motion, _ = read_bvh(self.clip(name))
            if clip_skel.names != skel.names:
                raise ValueError(f"{self.clip(name)}: its skeleton differs from {self.clip(self.train_clip)}'s "
                                 "(joints or their order); both clips must share one skeleton")
            yield split, skel, body, motion[frames]

    def _label(self, out: Path) -> None:
        import numpy as np
        from tqdm.auto import tqdm

        from zoo.data.meshes import inside, sample_surface

        g = torch.Generator().manual_seed(self.seed)
        arrays: dict[str, np.ndarray] = {}
        for split, skel, body, motion in self.split_motions():
            M = part_transforms(body, skel, motion)
            posed = skin(body, M)
            world = forward_kinematics(skel, motion)
            joints = torch.einsum("ij,fkjl->fkil", body.from_bvh, world[:, list(body.joints)])[..., :3, 3]
            joints = joints - (body.from_bvh @ world[:, body.root])[:, None, :3, 3]
            train = split == "train"
            rows = {k: [] for k in (PosedFrames.POOLS if train else ("points", "occupancy"))}
            for f in tqdm(range(len(motion)), desc=f"labelling {split} frames (winding numbers, once)", unit="frame"):
                mesh = Mesh(posed[f], body.mesh.faces)
                lo, hi = posed[f].amin(0), posed[f].amax(0)
                centre, half_size = (lo + hi) / 2, (hi - lo) * 0.55
                n_box = self.cached_points if train else self.eval_points
                box = centre + (torch.rand(n_box, 3, generator=g, dtype=torch.float64) * 2 - 1) * half_size
                if train:
                    near = sample_surface(mesh, self.cached_points, g)
                    near = near + self.noise * torch.randn(near.shape, generator=g, dtype=near.dtype)
                    labels = inside(mesh, torch.cat([box, near])).float()
                    for k, v in zip(PosedFrames.POOLS, (box, labels[:n_box], near, labels[n_box:])):
                        rows[k].append(v.float())
                else:
                    rows["points"].append(box.float())
                    rows["occupancy"].append(inside(mesh, box).float())
            arrays |= {f"{split}/{k}": torch.stack(v).numpy() for k, v in rows.items()}
            arrays[f"{split}/transforms"] = torch.linalg.inv(M).float().numpy()
            arrays[f"{split}/root"] = torch.zeros(len(motion), 3).numpy()
            arrays[f"{split}/joints"] = joints.float().numpy()
            arrays[f"{split}/vertices"] = posed.float().numpy()
        arrays["vertex_parts"] = body.labels.numpy()
        np.savez(out / "frames.npz", **arrays)

    def prepare_data(self) -> None:
        from zoo.data._base import build_once

        build_once(self.cache_folder(), self._label)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        shared, splits = self.cached_splits("frames.npz")
        self.body = self.build_body(read_bvh(self.clip(self.train_clip))[0])
        for split, cache in splits.items():
            draw = (self.box_points, self.surface_points) if split == "train" else None
            setattr(self, f"{split}_set", PosedFrames(cache, shared["vertex_parts"], draw, self.seed))

    def cached_splits(self, file: str) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
        """The cache file's arrays (written by prepare_data on first use): those every split shares, and each
        split's ("train/x" is the train split's "x")."""
        import numpy as np

        folder = self.cache_folder()
        if not (folder / "done").is_file():
            self.prepare_data()
        with np.load(folder / file, allow_pickle=False) as z:
            arrays = {k: torch.from_numpy(z[k]) for k in z.files}
        splits = {split: {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(split + "/")}
                  for split in ("train", "val", "test")}
        return {k: v for k, v in arrays.items() if "/" not in k}, splits

    @property
    def num_parts(self) -> int:
        return len(self.parts)
