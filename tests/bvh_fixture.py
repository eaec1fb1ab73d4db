"""A tiny motion-capture clip in the CMU skeleton's layout (the joint names, hierarchy and rounded offsets of CMU
subject 01; channels as CMU's: the root's position and ZYX rotation, ZYX rotations elsewhere), with a few frames of
small random joint rotations, written as a real BVH file: what zoo.data.articulated reads when Debian's
assimp-testmodels is not installed."""
from __future__ import annotations

from pathlib import Path

import torch

# (joint, parent, offset); End Sites as (parent, offset) below
JOINTS = [
    ("Hips", None, (0, 0, 0)), ("LHipJoint", "Hips", (0, 0, 0)), ("LeftUpLeg", "LHipJoint", (1.36, -1.79, 0.84)),
    ("LeftLeg", "LeftUpLeg", (2.45, -6.73, 0)), ("LeftFoot", "LeftLeg", (2.56, -7.04, 0)),
    ("LeftToeBase", "LeftFoot", (0.16, -0.43, 2.32)), ("RHipJoint", "Hips", (0, 0, 0)),
    ("RightUpLeg", "RHipJoint", (-1.31, -1.79, 0.84)), ("RightLeg", "RightUpLeg", (-2.54, -6.99, 0)),
    ("RightFoot", "RightLeg", (-2.57, -7.06, 0)), ("RightToeBase", "RightFoot", (-0.16, -0.45, 2.36)),
    ("LowerBack", "Hips", (0, 0, 0)), ("Spine", "LowerBack", (0.03, 2.04, -0.19)),
    ("Spine1", "Spine", (0.06, 2.05, -0.04)), ("Neck", "Spine1", (0, 0, 0)), ("Neck1", "Neck", (-0.05, 1.75, 0.17)),
    ("Head", "Neck1", (0.1, 1.76, -0.12)), ("LeftShoulder", "Spine1", (0, 0, 0)),
    ("LeftArm", "LeftShoulder", (3.36, 1.2, -0.31)), ("LeftForeArm", "LeftArm", (4.98, 0, 0)),
    ("LeftHand", "LeftForeArm", (3.48, 0, 0)), ("LeftFingerBase", "LeftHand", (0, 0, 0)),
    ("LFingers", "LeftFingerBase", (0.72, 0, 0)), ("LThumb", "LeftHand", (0, 0, 0)),
    ("RightShoulder", "Spine1", (0, 0, 0)), ("RightArm", "RightShoulder", (-3.14, 1.37, -0.4)),
    ("RightForeArm", "RightArm", (-5.24, 0, 0)), ("RightHand", "RightForeArm", (-3.44, 0, 0)),
    ("RightFingerBase", "RightHand", (0, 0, 0)), ("RFingers", "RightFingerBase", (-0.62, 0, 0)),
    ("RThumb", "RightHand", (0, 0, 0)),
]
END_SITES = {"LeftToeBase": (0, 0, 1.19), "RightToeBase": (0, 0, 1.21), "Head": (0.04, 1.77, -0.06),
             "LFingers": (0.58, 0, 0), "LThumb": (0.59, 0, 0.59), "RFingers": (-0.5, 0, 0), "RThumb": (-0.51, 0, 0.51)}


def hierarchy() -> str:
    children: dict[str | None, list[str]] = {}
    for name, parent, _ in JOINTS:
        children.setdefault(parent, []).append(name)
    offsets = {name: off for name, _, off in JOINTS}
    lines = ["HIERARCHY"]

    def emit(name: str, depth: int) -> None:
        pad = "\t" * depth
        root = depth == 0
        lines.append(f"{pad}{'ROOT' if root else 'JOINT'} {name}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}\tOFFSET {' '.join(f'{v:.5f}' for v in offsets[name])}")
        lines.append(f"{pad}\tCHANNELS " + ("6 Xposition Yposition Zposition " if root else "3 ")
                     + "Zrotation Yrotation Xrotation")
        for child in children.get(name, []):
            emit(child, depth + 1)
        if name in END_SITES:
            end = " ".join(f"{v:.5f}" for v in END_SITES[name])
            lines.extend([f"{pad}\tEnd Site", f"{pad}\t{{", f"{pad}\t\tOFFSET {end}", f"{pad}\t}}"])
        lines.append(f"{pad}}}")

    emit("Hips", 0)
    return "\n".join(lines)


def write_clip(path: Path, frames: int = 6, seed: int = 0, degrees: float = 25.0) -> Path:
    """A clip of `frames` frames: the root at a random place, every joint turned by up to `degrees` per axis."""
    g = torch.Generator().manual_seed(seed)
    channels = 6 + 3 * (len(JOINTS) - 1)
    motion = (torch.rand(frames, channels, generator=g) * 2 - 1) * degrees
    motion[:, :3] = torch.rand(frames, 3, generator=g) * 10
    rows = [" ".join(f"{v:.4f}" for v in row) for row in motion.tolist()]
    path.write_text(hierarchy() + f"\nMOTION\nFrames: {frames}\nFrame Time: 0.0083333\n" + "\n".join(rows) + "\n")
    return path


def write_clips(folder: Path) -> Path:
    """01_01.bvh (12 frames) and 01_03.bvh (6 frames) in `folder`, named as the CMU clips the recipes read."""
    folder.mkdir(parents=True, exist_ok=True)
    write_clip(folder / "01_01.bvh", 12, 0)
    write_clip(folder / "01_03.bvh", 6, 1)
    return folder
