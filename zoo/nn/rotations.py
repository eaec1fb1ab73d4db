"""Uniform random rotations, shared by the shape papers (Canonical Capsules' Siamese poses, the derived Lambertian
renders)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_rotations(n: int, d: int = 3, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[n, d, d] rotations uniform on SO(d): in 2-D an angle uniform in [0, 2π), in 3-D the rotation of a unit
    quaternion drawn as a normalised Gaussian (uniform on the 3-sphere, hence Haar on SO(3))."""
    if d == 2:
        theta = torch.rand(n, generator=generator, dtype=dtype) * 2 * math.pi
        c, s = theta.cos(), theta.sin()
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    if d != 3:
        raise ValueError(f"rotations in {d} dimensions: only 2-D and 3-D are supported")
    w, x, y, z = F.normalize(torch.randn(n, 4, generator=generator, dtype=dtype), dim=-1).unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], -2)
