"""GLOM (Hinton 2021, arXiv 2102.12627): columns of level embeddings that settle into islands of agreement.

The image is cut into patches, one column per patch (a location). A column holds one embedding per level, x_l for
l = 1..L, and every column uses the same weights. At each step every embedding becomes a weighted average of four
contributions, all computed from the previous step's state:

    x_l(t+1) = [w_prev · x_l(t) + w_up · up_l(x_{l-1}(t)) + w_down · down_l(x_{l+1}(t), location)
                + w_att · Σ_j a_ij x_l,j(t)] / (the weights present)

- up_l, the bottom-up net, predicts level l from the level below; level 1's bottom-up input is the image patch;
- down_l, the top-down net, predicts level l from the level above and the column's location (an implicit function
  of position, so one object-level vector can predict different parts at different places); the top level has none;
- the attention is GLOM's simplified transformer: the embeddings are their own queries, keys and values, with
  a_ij ∝ exp(β_l x̂_i · x̂_j) over the columns j within a radius r_l of column i (more local at lower levels,
  every column at the top). x̂ is the unit-length embedding: the paper's dot product with its unconstrained norm
  taken out, so β alone sets how sharply similar vectors gather (our choice; the paper gives no normalisation).

At t = 0 each column is filled bottom-up on its own (x_1 = up_1(patch), x_l = up_l(x_{l-1})): what a patch says
without its neighbours. All levels are updated at once: the per-level nets are batched weights (zoo.nn's
`Experts`) and the attention one batched product over levels, so only the time steps are a loop.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.moe import Experts


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Images [B, C, H, W] -> patches [B, N, C·patch²], columns in row-major order over the (H/patch, W/patch) grid."""
    B, C, H, W = images.shape
    if H % patch or W % patch:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {patch}")
    p = images.unfold(2, patch, patch).unfold(3, patch, patch)  # [B, C, gh, gw, patch, patch]
    return p.permute(0, 2, 3, 1, 4, 5).reshape(B, (H // patch) * (W // patch), C * patch * patch)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], chans: int) -> torch.Tensor:
    """The inverse of `patchify`: [B, N, C·patch²] -> [B, C, H, W]."""
    B = patches.shape[0]
    gh, gw = grid
    patch = int(round(math.sqrt(patches.shape[-1] // chans)))
    p = patches.reshape(B, gh, gw, chans, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return p.reshape(B, chans, gh * patch, gw * patch)


def grid_locations(grid: tuple[int, int]) -> torch.Tensor:
    """Column centres [N, 2] as (x, y) in [-1, 1], row-major like `patchify`."""
    gh, gw = grid
    y = (torch.arange(gh) + 0.5) / gh * 2 - 1
    x = (torch.arange(gw) + 0.5) / gw * 2 - 1
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2)


def fourier_features(loc: torch.Tensor, freqs: int) -> torch.Tensor:
    """sin and cos of 2^k·π·loc for k < freqs, with loc itself: [N, 2] -> [N, 2 + 4·freqs] (the top-down net's
    location input, a neural field's positional code)."""
    scales = math.pi * 2.0 ** torch.arange(freqs, dtype=loc.dtype)
    z = loc[:, :, None] * scales  # [N, 2, F]
    return torch.cat([loc, z.sin().flatten(1), z.cos().flatten(1)], 1)


def neighbourhoods(grid: tuple[int, int], radii: list[int | None]) -> torch.Tensor:
    """Attention masks [L, N, N]: column j is visible from column i at level l when their grid distance (the larger
    of the row and column offsets) is at most radii[l]; None means every column."""
    gh, gw = grid
    r, c = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    r, c = r.flatten(), c.flatten()
    dist = torch.maximum((r[:, None] - r[None]).abs(), (c[:, None] - c[None]).abs())
    return torch.stack([torch.ones_like(dist, dtype=torch.bool) if rad is None else dist <= rad for rad in radii])


class GLOM(nn.Module):
    """L levels of d-dimensional embeddings in every column of a (gh, gw) grid of patches.

    `forward(patches, T)` returns the state after each of the steps t = 0..T, each [L, B, N, d] (levels first, so
    that level l's nets see [B·N, d] rows).

    Args:
        patch_dim: pixels per patch (C·patch²).
        grid: (rows, columns) of patches.
        levels: L.
        dim: d, the embedding size at every level.
        hidden: the hidden width of the bottom-up and top-down nets (one ReLU layer each).
        freqs: Fourier frequencies of the location code given to the top-down nets.
        radii: per level, the attention radius in columns (None: all columns); lower levels more local.
        beta: per level, the attention's inverse temperature β.
        weights: (w_prev, w_up, w_down, w_att), the four contributions' weights in the average.
    """

    def __init__(self, patch_dim: int, grid: tuple[int, int], levels: int = 3, dim: int = 64, hidden: int = 256,
                 freqs: int = 4, radii: list[int | None] | None = None, beta: list[float] | None = None,
                 weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)):
        super().__init__()
        L = levels
        radii = list(radii) if radii is not None else [1] * (L - 1) + [None]
        beta = list(beta) if beta is not None else [10.0] * L
        if len(radii) != L or len(beta) != L:
            raise ValueError(f"radii and beta need one value per level ({L}); got {len(radii)} and {len(beta)}")
        if len(weights) != 4 or min(weights) < 0 or weights[0] + weights[1] + weights[3] <= 0:
            raise ValueError(f"weights are (w_prev, w_up, w_down, w_att), non-negative; got {weights}")
        self.levels, self.dim, self.grid = L, dim, tuple(grid)
        self.up_1 = nn.Sequential(nn.Linear(patch_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.up = Experts(L - 1, dim, hidden, dim, bias=True)          # up_l, l = 2..L
        loc = fourier_features(grid_locations(self.grid), freqs)
        self.down = Experts(L - 1, dim + loc.shape[1], hidden, dim, bias=True)  # down_l, l = 1..L-1
        self.register_buffer("location", loc, persistent=False)
        self.register_buffer("mask", neighbourhoods(self.grid, radii), persistent=False)
        self.register_buffer("beta", torch.tensor(beta, dtype=torch.float32).view(L, 1, 1, 1), persistent=False)
        w = torch.tensor(weights, dtype=torch.float32)
        self.register_buffer("w", w, persistent=False)
        norm = torch.full((L, 1, 1, 1), float(w.sum()))
        norm[-1] -= w[2]  # the top level has no top-down prediction
        self.register_buffer("norm", norm, persistent=False)

    def bottom_up(self, e: torch.Tensor) -> torch.Tensor:
        """The t = 0 state [L, B, N, d]: each column on its own, level by level from its patch's embedding e."""
        xs = [e]
        for i in range(self.levels - 1):  # depth, not units: each level needs the one below
            w1, w2, b1, b2 = self.up.w1[i], self.up.w2[i], self.up.b1[i], self.up.b2[i]
            xs.append(torch.relu(xs[-1] @ w1 + b1) @ w2 + b2)
        return torch.stack(xs)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_j a_ij x_j with a_ij ∝ exp(β x̂_i·x̂_j) over each level's neighbourhood: [L, B, N, d] -> the same."""
        u = F.normalize(x, dim=-1)
        logits = (u @ u.transpose(-1, -2)) * self.beta  # [L, B, N, N]
        logits = logits.masked_fill(~self.mask[:, None], float("-inf"))
        return logits.softmax(-1) @ x

    def predictions(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bottom-up [L, B, N, d] and top-down [L-1, B, N, d] predictions from the state x."""
        L, B, N, d = x.shape
        up = self.up(x[:-1].reshape(L - 1, B * N, d)).view(L - 1, B, N, d)
        loc = self.location.expand(L - 1, B, N, -1)
        down = self.down(torch.cat([x[1:], loc], -1).reshape(L - 1, B * N, -1)).view(L - 1, B, N, d)
        return torch.cat([e[None], up]), down

    def step(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """One synchronous update of every level in every column."""
        up, down = self.predictions(x, e)
        w_prev, w_up, w_down, w_att = self.w
        total = w_prev * x + w_up * up + w_att * self.attend(x)
        total = total + F.pad(w_down * down, (0, 0, 0, 0, 0, 0, 0, 1))
        return total / self.norm

    def forward(self, patches: torch.Tensor, T: int) -> list[torch.Tensor]:
        e = self.up_1(patches)
        states = [self.bottom_up(e)]
        for _ in range(T):
            states.append(self.step(states[-1], e))
        return states


def island_scores(z: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How much the embeddings z [B, N, d] of one image agree within objects and differ between them.

    owner [B, N] names the object at each column (-1: none). Returns the mean cosine similarity over pairs of
    distinct columns of the same object, and over pairs of columns of different objects of the same image, each
    averaged over the images that have such pairs (NaN if none does)."""
    u = F.normalize(z, dim=-1)
    cos = u @ u.transpose(1, 2)  # [B, N, N]
    valid = (owner[:, :, None] >= 0) & (owner[:, None, :] >= 0)
    same = valid & (owner[:, :, None] == owner[:, None, :])
    same &= ~torch.eye(owner.shape[1], dtype=torch.bool, device=owner.device)
    other = valid & (owner[:, :, None] != owner[:, None, :])

    def mean(mask):
        n = mask.sum((1, 2))
        per_image = (cos * mask).sum((1, 2)) / n.clamp(min=1)
        keep = n > 0
        return per_image[keep].mean() if keep.any() else torch.tensor(float("nan"))

    return mean(same), mean(other)
