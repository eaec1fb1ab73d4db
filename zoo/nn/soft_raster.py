"""A differentiable soft rasteriser for triangle meshes (the probabilistic aggregation of Soft Rasterizer, Liu, Li,
Chen & Li, ICCV 2019), for derenderers trained by reconstruction error (Cerberus): every face contributes to every
pixel with a probability that falls off with the pixel's squared distance to the face's projection, so silhouettes
and shaded images have gradients with respect to vertices that a z-buffer's hard edges do not.

Orthographic camera, as `zoo.data.render`: it looks down -z at [-extent, extent]², pixel centres from
`zoo.data.render.pixel_centres` (row 0 at the top, y up). For pixel p and face j (projected to the image plane):

    D_j(p) = sigmoid(δ_j(p) d_j(p)² / σ)      d_j: distance from p to the triangle's edges, δ_j = +1 inside, −1 outside
    silhouette(p) = 1 − Π_j (1 − D_j(p))       (as 1 − exp Σ_j log σ(−δ d²/σ): no product of many small terms)
    image(p) = Σ_j w_j(p) c_j + w_b(p) c_b,   w_j ∝ D_j(p) exp(z_j(p) / γ),  w_b ∝ exp(ε / γ)

z_j(p) is the face's depth at p (barycentric, extrapolated outside the face) mapped from [`z_min`, `z_max`] to
[0, 1] (larger is nearer, the camera being at +z), c_j a colour per face and c_b the background's. As σ, γ → 0 the
silhouette is the hard coverage and the image the z-buffer's nearest face. Everything is one batched computation
over meshes x pixels x faces, `chunk` pixel-face pairs at a time; back faces are kept (a soft renderer needs both
sides near silhouettes).
"""
from __future__ import annotations

import torch

from zoo.data.render import pixel_centres


def _edge_distance_sq(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distance from points p [..., 2] to the segments a-b [..., 2] (broadcast)."""
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    return (p - a - t[..., None] * ab).pow(2).sum(-1)


def face_terms(tri: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For triangles tri [B, F, 3, 3] and pixel centres p [P, 2]: (signed squared distance δ d² [B, P, F], depth z
    [B, P, F] by barycentric interpolation (extrapolated outside), barycentric weights [B, P, F, 3])."""
    a, b, c = tri[:, :, 0], tri[:, :, 1], tri[:, :, 2]  # [B, F, 3]
    q = p[None, :, None, :]  # [1, P, 1, 2]
    A, Bv, C = a[:, None, :, :2], b[:, None, :, :2], c[:, None, :, :2]  # [B, 1, F, 2]
    e1, e2 = Bv - A, C - A
    det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
    d = q - A
    u = (d[..., 0] * e2[..., 1] - d[..., 1] * e2[..., 0]) / det
    w = (e1[..., 0] * d[..., 1] - e1[..., 1] * d[..., 0]) / det
    bary = torch.stack([1 - u - w, u, w], -1)
    inside = (bary >= 0).all(-1)
    dist = torch.minimum(torch.minimum(_edge_distance_sq(q, A, Bv), _edge_distance_sq(q, Bv, C)),
                         _edge_distance_sq(q, C, A))
    z = a[:, None, :, 2] * bary[..., 0] + b[:, None, :, 2] * bary[..., 1] + c[:, None, :, 2] * bary[..., 2]
    return torch.where(inside, dist, -dist), z, bary


def soft_render(vertices: torch.Tensor, faces: torch.Tensor, colours: torch.Tensor | None = None, size: int = 64,
                extent: float = 1.0, sigma: float = 1e-4, gamma: float = 1e-4, z_min: float = -2.0, z_max: float = 2.0,
                background: torch.Tensor | float = 0.0, eps: float = 1e-3, chunk: int = 1 << 20
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Soft silhouettes [B, size, size] and, with `colours` [B, F, C] per face, soft images [B, size, size, C] of
    meshes `vertices` [B, V, 3] sharing `faces` [F, 3] (long)."""
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be [B, V, 3], got {list(vertices.shape)}")
    if len(faces) == 0:
        raise ValueError("the mesh has no faces to render")
    B, F = vertices.shape[0], len(faces)
    p = pixel_centres(size, extent).to(vertices.dtype).to(vertices.device)
    tri = vertices[:, faces]  # [B, F, 3, 3]
    log_empty, parts_img = [], []
    step = max(1, chunk // max(1, B * F))
    for s in range(0, len(p), step):
        sd, z, _ = face_terms(tri, p[s:s + step])
        log_empty.append(torch.nn.functional.logsigmoid(-sd / sigma).sum(-1))  # log(1 − D_j), exactly
        if colours is not None:
            zn = ((z - z_min) / (z_max - z_min)).clamp(0, 1)
            logits = torch.nn.functional.logsigmoid(sd / sigma) + zn / gamma  # log(D_j exp(z_j / γ)), exactly
            bg = torch.full_like(logits[..., :1], eps / gamma)
            w = torch.softmax(torch.cat([logits, bg], -1), -1)  # [B, p, F + 1]
            col = torch.einsum("bpf,bfc->bpc", w[..., :F], colours) + w[..., F:] * torch.as_tensor(
                background, dtype=vertices.dtype, device=vertices.device)
            parts_img.append(col)
    silhouette = 1 - torch.cat(log_empty, 1).exp()
    image = torch.cat(parts_img, 1).view(B, size, size, -1) if colours is not None else None
    return silhouette.view(B, size, size), image
