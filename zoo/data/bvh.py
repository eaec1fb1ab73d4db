"""Motion capture in the BVH format: a joint hierarchy with offsets and channels, then one row of channel values
per frame (the CMU clips in Debian's `assimp-testmodels`, `/usr/share/assimp/models/BVH`).

`read_bvh` parses a file into a `Skeleton` and its motion [frames, channels]; `forward_kinematics` turns the motion
into every joint's world transform [frames, joints, 4, 4], batched over frames and over the joints of one depth of
the tree (a loop over depths, not joints). Conventions, as BVH writers use them: each joint's local transform is a
translation by its offset (plus its position channels, if any) followed by its rotation channels composed in the
order they are listed (`Zrotation Yrotation Xrotation` is R = Rz·Ry·Rx, angles in degrees); a child's world
transform is its parent's times its local one. `End Site` blocks become joints named "<parent>_end" with no
channels, so every bone has both ends. Errors name the file and line.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

_AXES = {"X": 0, "Y": 1, "Z": 2}
_CHANNELS = {f"{a}{kind}" for a in "XYZ" for kind in ("position", "rotation")}


@dataclass(frozen=True)
class Skeleton:
    """names [J], parents [J] (-1 for the root), offsets [J, 3], channels: per joint its channel names, and
    `first`: per joint the column of its first channel in the motion rows."""

    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: torch.Tensor
    channels: tuple[tuple[str, ...], ...]
    first: tuple[int, ...]
    source: str = ""

    @property
    def num_channels(self) -> int:
        return sum(len(c) for c in self.channels)

    def depths(self) -> list[int]:
        d: list[int] = []
        for p in self.parents:
            d.append(0 if p < 0 else d[p] + 1)
        return d

    def index(self, names: list[str] | tuple[str, ...]) -> list[int]:
        """The joints' indices, or a ValueError naming the file, each unknown joint and the closest known names."""
        where = {n: i for i, n in enumerate(self.names)}
        unknown = [n for n in names if n not in where]
        if unknown:
            hints = "; ".join(f"{n!r}: did you mean {difflib.get_close_matches(n, self.names, 3) or 'none close'}"
                              for n in unknown)
            raise ValueError(f"{self.source or 'skeleton'}: unknown joint(s) {unknown} ({hints}). The skeleton "
                             f"has {len(self.names)} joints: {', '.join(self.names)}")
        return [where[n] for n in names]


class BVHError(ValueError):
    pass


def read_bvh(path: str | Path) -> tuple[Skeleton, torch.Tensor, float]:
    """(skeleton, motion [frames, channels] as float64, seconds per frame) of a BVH file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such BVH file")
    lines = path.read_text(errors="replace").splitlines()
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    stack: list[int] = []
    pending: int | None = None  # the joint whose "{" comes next
    i = 0

    def fail(msg: str) -> BVHError:
        return BVHError(f"{path}, line {i + 1}: {msg}")

    if not lines or lines[0].strip() != "HIERARCHY":
        raise BVHError(f"{path}, line 1: a BVH file starts with HIERARCHY")
    for i in range(1, len(lines)):
        words = lines[i].split()
        if not words:
            continue
        key = words[0]
        if key in ("ROOT", "JOINT") or (key == "End" and words[1:2] == ["Site"]):
            if key == "ROOT" and (names or stack):
                raise fail("a second ROOT (one skeleton per file is read)")
            if key != "ROOT" and not stack:
                raise fail(f"{key} outside any joint")
            name = " ".join(words[1:]) if key != "End" else f"{names[stack[-1]]}_end"
            if not name:
                raise fail(f"{key} without a name")
            names.append(name), parents.append(stack[-1] if stack else -1), offsets.append([0.0, 0.0, 0.0])
            channels.append(())
            pending = len(names) - 1
        elif key == "{":
            if pending is None:
                raise fail("'{' without a joint")
            stack.append(pending)
            pending = None
        elif key == "}":
            if not stack:
                raise fail("unmatched '}'")
            stack.pop()
        elif key == "OFFSET":
            if not stack or len(words) != 4:
                raise fail("OFFSET needs three numbers inside a joint")
            offsets[stack[-1]] = [float(w) for w in words[1:]]
        elif key == "CHANNELS":
            if not stack or len(words) < 2 or int(words[1]) != len(words) - 2:
                raise fail("CHANNELS needs its count and that many channel names inside a joint")
            bad = [w for w in words[2:] if w not in _CHANNELS]
            if bad:
                raise fail(f"unknown channel(s) {bad}; BVH channels are {sorted(_CHANNELS)}")
            channels[stack[-1]] = tuple(words[2:])
        elif key == "MOTION":
            break
        else:
            raise fail(f"unexpected {key!r} in the HIERARCHY section")
    else:
        raise BVHError(f"{path}: no MOTION section")
    if stack or not names:
        raise BVHError(f"{path}: the HIERARCHY section is incomplete (unclosed joints or no ROOT)")
    try:
        frames = int(lines[i + 1].split(":")[1])
        frame_time = float(lines[i + 2].split(":")[1])
    except (IndexError, ValueError):
        raise BVHError(f"{path}, line {i + 2}: MOTION is followed by 'Frames: N' and 'Frame Time: seconds'") from None
    first, c = [], 0
    for ch in channels:
        first.append(c)
        c += len(ch)
    rows = [ln.split() for ln in lines[i + 3:] if ln.strip()]
    if len(rows) < frames:
        raise BVHError(f"{path}: the header says {frames} frames but only {len(rows)} rows follow")
    rows = rows[:frames]  # rows past the declared count are ignored, as other readers do (some files have one)
    bad = [k for k, r in enumerate(rows) if len(r) != c]
    if bad:
        raise BVHError(f"{path}, line {i + 4 + bad[0]}: {len(rows[bad[0]])} values where the hierarchy has {c} "
                       "channels")
    motion = torch.tensor([[float(v) for v in r] for r in rows], dtype=torch.float64).reshape(frames, c)
    skel = Skeleton(tuple(names), tuple(parents), torch.tensor(offsets, dtype=torch.float64), tuple(channels),
                    tuple(first), str(path))
    return skel, motion, frame_time


def axis_rotation(axis: int, degrees: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] by `degrees` [...] about axis 0 (x), 1 (y) or 2 (z), right-handed."""
    a = degrees * (math.pi / 180)
    c, s = a.cos(), a.sin()
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    j, k = [(1, 2), (2, 0), (0, 1)][axis]
    R = torch.zeros(*a.shape, 3, 3, dtype=a.dtype, device=a.device)
    R[..., axis, axis] = one
    R[..., j, j], R[..., j, k], R[..., k, j], R[..., k, k] = c, -s, s, c
    return R + zero[..., None, None]


def local_transforms(skel: Skeleton, motion: torch.Tensor) -> torch.Tensor:
    """Each joint's transform relative to its parent [frames, joints, 4, 4]."""
    F, J = motion.shape[0], len(skel.names)
    T = torch.eye(4, dtype=motion.dtype, device=motion.device).repeat(F, J, 1, 1)
    T[:, :, :3, 3] = skel.offsets.to(motion)
    # group joints by channel layout so each group is one batched product (CMU files have two layouts)
    layouts: dict[tuple[str, ...], list[int]] = {}
    for j, ch in enumerate(skel.channels):
        if ch:
            layouts.setdefault(ch, []).append(j)
    for ch, joints in layouts.items():
        cols = torch.tensor([[skel.first[j] + k for k in range(len(ch))] for j in joints], device=motion.device)
        values = motion[:, cols]  # [F, G, len(ch)]
        R = torch.eye(3, dtype=motion.dtype, device=motion.device).expand(F, len(joints), 3, 3)
        for k, name in enumerate(ch):  # the channels of one joint, in their listed order
            if name.endswith("rotation"):
                R = R @ axis_rotation(_AXES[name[0]], values[..., k])
            else:
                T[:, joints, _AXES[name[0]], 3] += values[..., k]
        T[:, joints, :3, :3] = R
    return T


def forward_kinematics(skel: Skeleton, motion: torch.Tensor) -> torch.Tensor:
    """Every joint's world transform [frames, joints, 4, 4]: parent's world transform times the joint's local one,
    one depth of the tree at a time."""
    local = local_transforms(skel, motion)
    world = local.clone()
    depth = torch.tensor(skel.depths())
    parents = torch.tensor(skel.parents)
    for d in range(1, int(depth.max()) + 1):
        js = (depth == d).nonzero().squeeze(1)
        world[:, js] = world[:, parents[js]] @ local[:, js]
    return world


def joint_positions(skel: Skeleton, motion: torch.Tensor) -> torch.Tensor:
    """World positions [frames, joints, 3]."""
    return forward_kinematics(skel, motion)[..., :3, 3]
