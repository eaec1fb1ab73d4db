"""Cerberus (Deng, Kornblith & Hinton, 2019; arXiv 1905.11940): a multi-headed derenderer. A network looks at one
image and outputs a set of free-floating parts; each part (one head) has its own pose relative to the camera and its
own triangle mesh, a deformed template. A differentiable renderer draws the parts and the reconstruction error
trains the network; the part meshes' deformations are pushed to be the same across views of one object and across
poses of one articulated body.

Only the paper's abstract could be read here (no official code exists), so what the abstract leaves open is ours,
named so in the card: the template (a unit icosphere), the pose (a rotation from the 6-D representation of Zhou et
al. 2019, a translation and a per-axis scale), the deformation (per-vertex offsets in the part's frame, bounded by
tanh), the renderer (`zoo.nn.soft_raster`, orthographic, Lambertian shading under the data's light), the losses
(silhouette IoU, image MSE, a Laplacian smoothness term, and squared differences of the part shapes between the
paired images) and the encoder (a ResNet-18).

Per part k, with template vertices u [V, 3]:
    shape_k = s_k ⊙ (u + Δ_k)          the part's mesh in its own frame: what the invariances compare
    vertices_k = R_k shape_k + t_k     in the camera's frame
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.resnet import resnet_encoder
from zoo.nn.soft_raster import soft_render


def icosphere(level: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A unit icosphere: vertices [V, 3] (float32) and faces [F, 3] (long, wound outwards); level 0 is the
    icosahedron (12, 20), each level splits every face in four (level 1: 42, 80; level 2: 162, 320)."""
    p = (1 + math.sqrt(5)) / 2
    v = [(-1, p, 0), (1, p, 0), (-1, -p, 0), (1, -p, 0), (0, -1, p), (0, 1, p), (0, -1, -p), (0, 1, -p),
         (p, 0, -1), (p, 0, 1), (-p, 0, -1), (-p, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
         (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
         (8, 6, 7), (9, 8, 1)]
    verts = F.normalize(torch.tensor(v, dtype=torch.float64), dim=1)
    faces = torch.tensor(f)
    for _ in range(level):
        e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # edges of faces, in order
        key = e.sort(1).values
        uniq, inv = torch.unique(key, dim=0, return_inverse=True)
        mid = F.normalize(verts[uniq].mean(1), dim=1)
        m = len(verts) + inv.view(3, -1).T  # [F, 3]: midpoints of edges 01, 12, 20
        verts = torch.cat([verts, mid])
        a, b, c = faces.unbind(1)
        faces = torch.cat([torch.stack([a, m[:, 0], m[:, 2]], 1), torch.stack([b, m[:, 1], m[:, 0]], 1),
                           torch.stack([c, m[:, 2], m[:, 1]], 1), m])
    return verts.float(), faces


def rotation_6d(x: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] from 6-D vectors [..., 6] by Gram-Schmidt on their two 3-D halves (the
    matrix's first two columns; Zhou et al. 2019): continuous, so a network can regress it."""
    a = F.normalize(x[..., :3], dim=-1)
    b = F.normalize(x[..., 3:] - (a * x[..., 3:]).sum(-1, keepdim=True) * a, dim=-1)
    return torch.stack([a, b, torch.linalg.cross(a, b)], -1)


def uniform_laplacian(faces: torch.Tensor, n: int) -> torch.Tensor:
    """The mesh's uniform Laplacian [n, n] (dense): L x = x − mean of x over each vertex's neighbours."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    A = torch.zeros(n, n)
    A[e[:, 0], e[:, 1]] = 1
    A[e[:, 1], e[:, 0]] = 1
    return torch.eye(n) - A / A.sum(1, keepdim=True)


class Parts(NamedTuple):
    """The derenderer's output for B images and P parts: rotation [B, P, 3, 3], translation [B, P, 3], scale
    [B, P, 3], offsets Δ [B, P, V, 3], shape [B, P, V, 3] (part frame) and vertices [B, P, V, 3] (camera frame)."""
    rotation: torch.Tensor
    translation: torch.Tensor
    scale: torch.Tensor
    offsets: torch.Tensor
    shape: torch.Tensor
    vertices: torch.Tensor


class PartHeads(nn.Module):
    """P heads, each a two-layer MLP from the image code to its part's parameters, computed as one batched product
    over heads (weights [P, C, H] and [P, H, O]: no loop over parts)."""

    def __init__(self, parts: int, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.W1 = nn.Parameter(torch.randn(parts, in_features, hidden) / math.sqrt(in_features))
        self.b1 = nn.Parameter(torch.zeros(parts, hidden))
        self.W2 = nn.Parameter(torch.zeros(parts, hidden, out_features))
        self.b2 = nn.Parameter(torch.zeros(parts, out_features))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, C] -> [B, P, O]."""
        z = F.relu(torch.einsum("bc,pch->bph", h, self.W1) + self.b1)
        return torch.einsum("bph,pho->bpo", z, self.W2) + self.b2


class Cerberus(nn.Module):
    """Image [B, C, H, W] -> P parts (`Parts`). Translations are bounded to [−extent, extent]³ by tanh, scales to
    [min_scale, max_scale] by a sigmoid, offsets to ±max_offset (in template units) by tanh. The heads start every
    part at scale `init_scale`, unrotated, at a point of a fixed Fibonacci spiral over the image, so the heads begin
    different."""

    def __init__(self, parts: int = 8, level: int = 1, in_chans: int = 1, width: float = 1.0, hidden: int = 128,
                 extent: float = 0.55, min_scale: float = 0.02, max_scale: float = 0.4, init_scale: float = 0.08,
                 max_offset: float = 0.5):
        super().__init__()
        if not min_scale < init_scale < max_scale:
            raise ValueError(f"init_scale={init_scale} must lie strictly between min_scale={min_scale} and "
                             f"max_scale={max_scale}")
        u, faces = icosphere(level)
        self.register_buffer("template", u)
        self.register_buffer("faces", faces, persistent=False)
        self.register_buffer("laplacian", uniform_laplacian(faces, len(u)), persistent=False)
        self.P, self.V = parts, len(u)
        self.extent, self.min_scale, self.max_scale, self.max_offset = extent, min_scale, max_scale, max_offset
        self.encoder = resnet_encoder(18, width=width, in_chans=in_chans, cifar_stem=False)
        self.heads = PartHeads(parts, self.encoder.num_features, hidden, 12 + 3 * self.V)
        with torch.no_grad():
            b = self.heads.b2
            b[:, :6] = torch.tensor([1.0, 0, 0, 0, 1, 0])
            k = torch.arange(parts, dtype=torch.float64) + 0.5
            r, th = torch.sqrt(k / parts) * 0.6, k * math.pi * (3 - math.sqrt(5))
            b[:, 6] = torch.atanh(r * th.cos()).float()
            b[:, 7] = torch.atanh(r * th.sin()).float()
            q = (init_scale - min_scale) / (max_scale - min_scale)
            b[:, 9:12] = math.log(q / (1 - q))

    def forward(self, images: torch.Tensor) -> Parts:
        out = self.heads(self.encoder(images))
        B = len(images)
        R = rotation_6d(out[..., :6])
        t = self.extent * torch.tanh(out[..., 6:9])
        s = self.min_scale + (self.max_scale - self.min_scale) * torch.sigmoid(out[..., 9:12])
        d = self.max_offset * torch.tanh(out[..., 12:].reshape(B, self.P, self.V, 3))
        shape = s[:, :, None] * (self.template + d)
        vertices = torch.einsum("bpij,bpvj->bpvi", R, shape) + t[:, :, None]
        return Parts(R, t, s, d, shape, vertices)

    def mesh(self, vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All parts as one mesh: vertices [B, P V, 3] and faces [P F, 3]."""
        offsets = torch.arange(self.P, device=vertices.device)[:, None, None] * self.V
        return vertices.flatten(1, 2), (self.faces[None] + offsets).flatten(0, 1)


class Rendered(NamedTuple):
    """silhouette [B, H, W], image [B, H, W] (shaded), part_probs [B, H, W, P] (each part's share of the pixel's
    colour: which part shows there) or None."""
    silhouette: torch.Tensor
    image: torch.Tensor
    part_probs: torch.Tensor | None


def face_shading(tri: torch.Tensor, light: torch.Tensor, ambient: float) -> torch.Tensor:
    """Lambertian shade per face [B, F] from triangles [B, F, 3, 3] (outward winding) under light [3]."""
    n = F.normalize(torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]), dim=-1)
    return ambient + (1 - ambient) * (n @ light).clamp_min(0)


def render_parts(net: Cerberus, vertices: torch.Tensor, light: torch.Tensor, size: int, ambient: float,
                 sigma: float, gamma: float, threshold: float = 1e-4, parts: bool = False) -> Rendered:
    """Soft-render the parts' meshes (vertices [B, P, V, 3], camera frame) as shaded images; with `parts`, also
    which part shows at each pixel (one-hot colours per part through the same aggregation). Pixel-face pairs with
    D below `threshold` are skipped (`soft_render`)."""
    v, faces = net.mesh(vertices)
    colours = face_shading(v[:, faces], light.to(v), ambient)[..., None]
    if parts:
        onehot = torch.eye(net.P, dtype=v.dtype, device=v.device).repeat_interleave(len(net.faces), 0)
        colours = torch.cat([colours, onehot.expand(len(v), -1, -1)], -1)
    z = 2 * net.extent
    sil, img = soft_render(v, faces, colours, size, net.extent, sigma, gamma, -z, z, threshold=threshold)
    probs = None
    if parts:
        probs = img[..., 1:] / img[..., 1:].sum(-1, keepdim=True).clamp_min(1e-12)
    return Rendered(sil, img[..., 0], probs)


def iou_loss(silhouette: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − soft IoU per image [B] (Kato et al.'s silhouette loss): 1 − Σ S M / Σ (S + M − S M)."""
    inter = (silhouette * mask).flatten(1).sum(1)
    union = (silhouette + mask - silhouette * mask).flatten(1).sum(1)
    return 1 - inter / union.clamp_min(1e-12)


def invariance_loss(shape_a: torch.Tensor, shape_b: torch.Tensor, extent: float) -> torch.Tensor:
    """Mean squared difference of two predictions' part shapes [B, P, V, 3] in units of the image's half-width:
    0 when every head gives its part the same mesh in both images."""
    return ((shape_a - shape_b) / extent).pow(2).sum(-1).mean()


def correspondence(depth_a: torch.Tensor, depth_b: torch.Tensor, R_a: torch.Tensor, R_b: torch.Tensor,
                   extent: float, tol_pixels: float = 1.0) -> torch.Tensor:
    """For every pixel of view a [B, H W]: the index of the pixel of view b that shows the same surface point, or
    −1. The point is a's pixel centre at a's depth (−inf: nothing there), taken to b's frame by R_b R_aᵀ (both
    views look at one centred body); b sees it when b's depth at that pixel is within `tol_pixels` pixel widths
    of the point's (else something nearer hides it, or it faces away)."""
    from zoo.data.render import pixel_centres

    B, S = len(depth_a), depth_a.shape[-1]
    p = pixel_centres(S, extent).to(depth_a)
    za = depth_a.flatten(1)
    X = torch.cat([p.expand(B, -1, -1), za.nan_to_num(neginf=0.0)[..., None]], -1)
    Xb = X @ (R_b @ R_a.transpose(-1, -2)).transpose(-1, -2).to(X)
    col = ((Xb[..., 0] + extent) / (2 * extent) * S).floor().long()
    row = ((extent - Xb[..., 1]) / (2 * extent) * S).floor().long()
    inside = (col >= 0) & (col < S) & (row >= 0) & (row < S) & torch.isfinite(za)
    idx = (row * S + col).clamp(0, S * S - 1)
    zb = depth_b.flatten(1).gather(1, idx)
    seen = inside & torch.isfinite(zb) & ((zb - Xb[..., 2]).abs() <= tol_pixels * 2 * extent / S)
    return torch.where(seen, idx, -1)
