"""Batch augmentations done as tensor ops on the training step's device."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_translate(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift every image of `x` [B, C, H, W] by its own whole-pixel offset in [-max_shift, max_shift] along
    each axis, filling with zeros (the ±2 px "jitter" of the distillation paper's MNIST teacher).

    One gather for the whole batch: `out[b, :, i, j] = x[b, :, i - dy_b, j - dx_b]`, zero outside the image.
    """
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (2, b), generator=generator, device="cpu").to(x.device)
    padded = F.pad(x, (max_shift,) * 4)
    rows = (torch.arange(h, device=x.device)[None, :] - shifts[0][:, None] + max_shift)  # [B, H]
    cols = (torch.arange(w, device=x.device)[None, :] - shifts[1][:, None] + max_shift)  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of `x` [B, C, H, W] left-right with probability `p`, independently."""
    if p <= 0:
        return x
    flip = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
