"""Ellipse world: objects made of ambiguous elliptical parts, generated here (the kind of data Culp, Sabour &
Hinton 2022 (arXiv 2211.16564) generate to test GLOM; their generator could not be read here, so this one is ours).

Every object is five ellipses placed by its class's layout, then rotated, scaled and moved as a whole. All five
classes are built from the same parts, two round ellipses and three long ones, so a part's shape does not name its
whole; what a patch shows (a long ellipse's orientation, pieces of its neighbours) hints at it, and the arrangement
decides it (measured: a column alone is right 64% of the time, chance 20%; glom-ellipses). Each part's axes and
angle are jittered too (`part_noise`). Two objects are drawn into each 48 x 48 image, in two different quadrants, as
soft-edged ink in [0, 1].

A location is a 6 x 6 patch (an 8 x 8 grid of columns). Its label is the class of the object with the most ink in
it, or -1 where neither object puts more than `min_ink` pixels' worth of ink; `owner` says which of the two
objects (0 or 1) that is. Batches are (images [B, 1, 48, 48], labels [B, 64], owner [B, 64]).
"""
from __future__ import annotations

import math

import torch

from zoo.data._base import InMemoryData, Rows

CLASSES = ("face", "house", "tree", "sheep", "car")
ROUND, LONG = (0.2, 0.2), (0.42, 0.12)
# (centre x, centre y, angle in degrees, shape) in the object's frame: x right, y down, about one unit across
LAYOUTS = {
    "face": [(-0.4, -0.35, 0, ROUND), (0.4, -0.35, 0, ROUND), (0.0, 0.05, 90, LONG), (-0.3, 0.55, -20, LONG),
             (0.3, 0.55, 20, LONG)],
    "house": [(-0.38, -0.5, -35, LONG), (0.38, -0.5, 35, LONG), (-0.3, 0.1, 0, ROUND), (0.3, 0.1, 0, ROUND),
              (0.0, 0.5, 90, LONG)],
    "tree": [(0.0, 0.5, 90, LONG), (-0.35, -0.1, 45, LONG), (0.35, -0.1, -45, LONG), (-0.3, -0.6, 0, ROUND),
             (0.3, -0.6, 0, ROUND)],
    "sheep": [(0.0, -0.1, 0, LONG), (-0.3, 0.45, 90, LONG), (0.3, 0.45, 90, LONG), (-0.7, -0.4, 0, ROUND),
              (0.7, -0.2, 0, ROUND)],
    "car": [(0.0, 0.05, 0, LONG), (0.0, -0.4, 0, LONG), (0.6, -0.2, 90, LONG), (-0.45, 0.45, 0, ROUND),
            (0.45, 0.45, 0, ROUND)],
}
SIZE, PATCH, UNIT = 48, 6, 10.0  # image side, patch side, pixels per object-frame unit at scale 1


def _layout_tensor() -> torch.Tensor:
    """[classes, 5, 5]: centre x, centre y, angle (radians), semi-axes a, b."""
    return torch.tensor([[[x, y, math.radians(t), *ab] for x, y, t, ab in LAYOUTS[c]] for c in CLASSES])


def poses(m: int, generator: torch.Generator, rotation: tuple[float, float], scale: tuple[float, float]
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two wholes' poses in m images: centres [m, 2, 2] in pixels (in two different quadrants, jittered by up to
    2 pixels), angles [m, 2] in radians and scales [m, 2] in pixels per object-frame unit (see `ellipse_world`)."""
    quad = torch.rand(m, 4, generator=generator).argsort(1)[:, :2]
    centre = torch.stack([quad % 2, quad // 2], -1) * (SIZE / 2) + SIZE / 4
    centre = centre + (torch.rand(m, 2, 2, generator=generator) - 0.5) * 4
    lo, hi = rotation
    mag = lo + (hi - lo) * torch.rand(m, 2, generator=generator)
    sign = torch.where(torch.rand(m, 2, generator=generator) < 0.5, -1.0, 1.0)
    angle = torch.deg2rad(mag * sign if lo >= 0 else mag)
    s = (scale[0] + (scale[1] - scale[0]) * torch.rand(m, 2, generator=generator)) * UNIT
    return centre, angle, s


def ellipse_world(n: int, generator: torch.Generator, rotation: tuple[float, float] = (-30.0, 30.0),
                  scale: tuple[float, float] = (0.85, 1.15), part_noise: float = 0.15, pixel_noise: float = 0.0,
                  min_ink: float = 2.0, chunk: int = 500) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n images [n, 1, 48, 48], labels [n, 64] and owners [n, 64] (see the module docstring).

    rotation (degrees) and scale are the ranges of the wholes' random poses; |rotation| is drawn uniformly in the
    range and given a random sign, so (30, 60) tests rotations beyond the training range (-30, 30). part_noise is
    the standard deviation of each part's log-axes and of its angle in radians; pixel_noise adds Gaussian noise of
    that standard deviation to every pixel (after the labels are made)."""
    layouts = _layout_tensor()
    ys = torch.arange(SIZE, dtype=torch.float32) + 0.5
    py, px = torch.meshgrid(ys, ys, indexing="ij")
    pix = torch.stack([px.flatten(), py.flatten()], -1)  # [P, 2]
    images, labels, owners = [], [], []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        cls = torch.randint(0, len(CLASSES), (m, 2), generator=generator)
        centre, angle, s = poses(m, generator, rotation, scale)
        parts = layouts[cls]  # [m, 2, 5, 5]
        c, si = angle.cos()[..., None], angle.sin()[..., None]
        px_ = centre[..., 0:1] + s[..., None] * (c * parts[..., 0] - si * parts[..., 1])
        py_ = centre[..., 1:2] + s[..., None] * (si * parts[..., 0] + c * parts[..., 1])
        theta = parts[..., 2] + angle[..., None] + part_noise * torch.randn(m, 2, 5, generator=generator)
        axes = parts[..., 3:5] * s[..., None, None] * torch.exp(part_noise * torch.randn(m, 2, 5, 2, generator=generator))
        dx = pix[:, 0] - px_[..., None]  # [m, 2, 5, P]
        dy = pix[:, 1] - py_[..., None]
        ct, st = theta.cos()[..., None], theta.sin()[..., None]
        u, v = ct * dx + st * dy, -st * dx + ct * dy
        a, b = axes[..., 0:1], axes[..., 1:2]
        r = torch.sqrt((u / a).square() + (v / b).square())
        # r - 1 over its gradient's length: about the distance to the outline in pixels, so the edge is soft over
        # about a pixel all round (ink 1 inside, 0 outside)
        grad = torch.sqrt((u / a.square()).square() + (v / b.square()).square()) / r.clamp(min=1e-6)
        ink = torch.sigmoid(-2 * (r - 1) / grad.clamp(min=1e-6)).amax(2)  # [m, 2, P]
        image = ink.amax(1).view(m, 1, SIZE, SIZE)
        per_obj = ink.view(m * 2, 1, SIZE, SIZE)
        mass = torch.nn.functional.avg_pool2d(per_obj, PATCH).view(m, 2, -1) * PATCH * PATCH  # [m, 2, 64]
        owner = mass.argmax(1)
        present = mass.amax(1) > min_ink
        label = torch.where(present, cls.gather(1, owner), torch.full_like(owner, -1))
        owners.append(torch.where(present, owner, torch.full_like(owner, -1)))
        labels.append(label)
        if pixel_noise:
            image = image + pixel_noise * torch.randn(image.shape, generator=generator)
        images.append(image)
    return torch.cat(images), torch.cat(labels), torch.cat(owners)


class EllipseWorldDataModule(InMemoryData):
    """Generated ellipse-world images (module docstring); each split from its own generator seeded by (seed, split).

    Args:
        train_size, val_size, test_size: images per split.
        rotation, scale, part_noise: the pose ranges and part jitter of `ellipse_world`, for every split.
        batch_size, seed, num_workers: as every in-memory DataModule.
    """

    num_classes = len(CLASSES)
    classes = CLASSES

    def __init__(self, train_size: int = 20_000, val_size: int = 1_000, test_size: int = 2_000,
                 rotation: tuple[float, float] = (-30.0, 30.0), scale: tuple[float, float] = (0.85, 1.15),
                 part_noise: float = 0.15, batch_size: int = 64, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.train_size, self.val_size, self.test_size = train_size, val_size, test_size
        self.rotation, self.scale, self.part_noise = list(rotation), list(scale), part_noise

    def generate(self, n: int, split: int, **overrides) -> Rows:
        """n images of split `split` (0 train, 1 val, 2 test, higher for extra test sets), as this module's
        options with `overrides` (rotation, scale, part_noise, pixel_noise)."""
        g = torch.Generator().manual_seed(self.seed * 16 + split)
        options = dict(rotation=tuple(self.rotation), scale=tuple(self.scale), part_noise=self.part_noise) | overrides
        return Rows(*ellipse_world(n, g, **options))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        for i, split in enumerate(("train", "val", "test")):
            setattr(self, f"{split}_set", self.generate(getattr(self, f"{split}_size"), i))
