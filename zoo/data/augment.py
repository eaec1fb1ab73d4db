"""Augmentations shared by several DataModules: batch ones done as tensor ops on the training step's device, and
SimCLR's colour distortion (also Pix2seq's captioning and Pix2Seq-D's)."""
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


def color_distortion(strength: float):
    """SimCLR's colour distortion of strength s as a torchvision transform on one image [C, H, W] in [0, 1]: with
    probability 0.8 brightness, contrast and saturation jittered by 0.8·s and hue by 0.2·s in random order, then
    grey with probability 0.2 (google-research/simclr `color_distortion`; pix2seq's `random_color_jitter`)."""
    from torchvision.transforms import v2

    s = float(strength)
    return v2.Compose([v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
                       v2.RandomGrayscale(p=0.2)])
