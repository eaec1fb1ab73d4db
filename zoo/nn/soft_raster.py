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


def _terms(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, q: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Signed squared distance, depth and barycentric weights of points q [..., 2] for triangles with corners
    a, b, c [..., 3] (broadcast)."""
    A, Bv, C = a[..., :2], b[..., :2], c[..., :2]
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
    z = a[..., 2] * bary[..., 0] + b[..., 2] * bary[..., 1] + c[..., 2] * bary[..., 2]
    return torch.where(inside, dist, -dist), z, bary


def face_terms(tri: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For triangles tri [B, F, 3, 3] and pixel centres p [P, 2]: (signed squared distance δ d² [B, P, F], depth z
    [B, P, F] by barycentric interpolation (extrapolated outside), barycentric weights [B, P, F, 3])."""
    return _terms(tri[:, None, :, 0], tri[:, None, :, 1], tri[:, None, :, 2], p[None, :, None, :])


def soft_render(vertices: torch.Tensor, faces: torch.Tensor, colours: torch.Tensor | None = None, size: int = 64,
                extent: float = 1.0, sigma: float = 1e-4, gamma: float = 1e-4, z_min: float = -2.0, z_max: float = 2.0,
                background: torch.Tensor | float = 0.0, eps: float = 1e-3, chunk: int = 1 << 20,
                threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Soft silhouettes [B, size, size] and, with `colours` [B, F, C] per face, soft images [B, size, size, C] of
    meshes `vertices` [B, V, 3] sharing `faces` [F, 3] (long).

    threshold > 0 skips the pixel-face pairs whose D_j(p) is below it, as Soft Rasterizer's own kernel does: only
    pixels within the face's bounding box grown by sqrt(σ ln(1/threshold)) are visited, and pairs under the
    threshold there add nothing to the colour. The silhouette changes by at most −log(1 − threshold) per skipped
    pair in log space; the work falls from every pixel x face to the pixels near each face."""
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be [B, V, 3], got {list(vertices.shape)}")
    if len(faces) == 0:
        raise ValueError("the mesh has no faces to render")
    if threshold > 0:
        return _soft_render_near(vertices, faces, colours, size, extent, sigma, gamma, z_min, z_max, background, eps,
                                 threshold)
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


def near_pairs(tri: torch.Tensor, size: int, extent: float, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (face, pixel) pair whose pixel centre lies in the face's projected bounding box grown by `margin`:
    flat face indices into tri [B, F, 3, 3] viewed as [B F] and flat pixel indices into [B size²]."""
    with torch.no_grad():
        B, F = tri.shape[:2]
        xy = tri[..., :2].flatten(0, 1)  # [B F, 3, 2]
        lo, hi = xy.amin(1) - margin, xy.amax(1) + margin
        step = 2 * extent / size
        c0 = ((lo[:, 0] + extent) / step - 0.5).ceil().clamp(0, size).long()
        c1 = ((hi[:, 0] + extent) / step - 0.5).floor().clamp(-1, size - 1).long()
        r0 = ((extent - hi[:, 1]) / step - 0.5).ceil().clamp(0, size).long()
        r1 = ((extent - lo[:, 1]) / step - 0.5).floor().clamp(-1, size - 1).long()
        w, h = (c1 - c0 + 1).clamp_min(0), (r1 - r0 + 1).clamp_min(0)
        n = w * h
        face = torch.repeat_interleave(torch.arange(B * F, device=tri.device), n)
        k = torch.arange(len(face), device=tri.device) - torch.repeat_interleave(n.cumsum(0) - n, n)
        wf = w[face]
        row, col = r0[face] + k // wf.clamp_min(1), c0[face] + k % wf.clamp_min(1)
        pixel = (face // F) * size * size + row * size + col
    return face, pixel


def _soft_render_near(vertices, faces, colours, size, extent, sigma, gamma, z_min, z_max, background, eps,
                      threshold):
    """`soft_render` over the pixel-face pairs near each face only (its docstring, `threshold`)."""
    import math

    B = vertices.shape[0]
    S2 = size * size
    tri = vertices[:, faces]  # [B, F, 3, 3]
    cut = math.log(1 / threshold - 1)  # D_j < threshold  <=>  δ d² / σ < −cut
    face, pixel = near_pairs(tri, size, extent, math.sqrt(sigma * max(cut, 0.0)))
    p = pixel_centres(size, extent).to(vertices)
    t = tri.flatten(0, 1)[face]
    sd, z, _ = _terms(t[:, 0], t[:, 1], t[:, 2], p[pixel % S2])
    x = sd / sigma
    log_empty = torch.zeros(B * S2, dtype=vertices.dtype, device=vertices.device)
    log_empty = log_empty.index_add(0, pixel, torch.nn.functional.logsigmoid(-x))
    silhouette = (1 - log_empty.exp()).view(B, size, size)
    if colours is None:
        return silhouette, None
    zn = ((z - z_min) / (z_max - z_min)).clamp(0, 1)
    logits = torch.where(x >= -cut, torch.nn.functional.logsigmoid(x) + zn / gamma, -torch.inf)
    bg = torch.full((B * S2,), eps / gamma, dtype=vertices.dtype, device=vertices.device)
    with torch.no_grad():
        top = bg.scatter_reduce(0, pixel, logits, "amax")
    e = (logits - top[pixel]).exp()
    e_bg = (bg - top).exp()
    total = e_bg.index_add(0, pixel, e)
    C = colours.shape[-1]
    col = colours.flatten(0, 1)[face] * e[:, None]
    summed = torch.zeros(B * S2, C, dtype=vertices.dtype, device=vertices.device).index_add(0, pixel, col)
    back = torch.as_tensor(background, dtype=vertices.dtype, device=vertices.device)
    image = (summed + e_bg[:, None] * back) / total[:, None]
    return silhouette, image.view(B, size, size, C)
