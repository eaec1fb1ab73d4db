"""The mesh rasteriser (zoo.data.render.rasterise: every pixel against a chunk of faces in one batched computation)
against the same z-buffer written as a plain PyTorch loop over faces (each face's barycentric test over all pixels,
then a z-buffer update), the way a direct reading of the algorithm goes. Same mesh, size and device; the two
z-buffers are checked equal first. Likewise the soft rasteriser's silhouette (zoo.nn.soft_raster.soft_render)
against a loop over faces that adds each face's log(1 − D_j) over all pixels, and its near-pairs mode (Soft
Rasterizer's threshold: only pixels near each face) against every pixel-face pair on a Cerberus training step.

    python benchmarks/render.py [--mesh elephant.off --size 64 --repeats 3 --threads N]

Prints renders/s of each and the ratio. The mesh is one of Debian's libcgal-demo OFF files (apt-get install
libcgal-demo), normalised into the [-0.9, 0.9] box.
"""
from __future__ import annotations

import argparse

import torch

from _compare import Row, interleaved, print_rows
from zoo.data.meshes import Mesh, mesh_folder, normalise, read_solid
from zoo.data.render import pixel_centres, rasterise
from zoo.nn.soft_raster import face_terms, soft_render


def loop_depth(mesh: Mesh, size: int, extent: float = 1.0) -> torch.Tensor:
    """The depth buffer [size, size], one face at a time (back faces culled, as rasterise does)."""
    p = pixel_centres(size, extent)
    best = torch.full((len(p),), -torch.inf, dtype=torch.float64)
    tri = mesh.vertices.double()[mesh.faces]
    for a, b, c in tri:
        e1, e2 = (b - a)[:2], (c - a)[:2]
        det = e1[0] * e2[1] - e1[1] * e2[0]
        if det <= 1e-12:
            continue
        d = p - a[:2]
        u = (d[:, 0] * e2[1] - d[:, 1] * e2[0]) / det
        w = (e1[0] * d[:, 1] - e1[1] * d[:, 0]) / det
        z = a[2] + u * (b[2] - a[2]) + w * (c[2] - a[2])
        hit = (u >= 0) & (w >= 0) & (u + w <= 1) & (z > best)
        best = torch.where(hit, z, best)
    return best.view(size, size)


def row(mesh_name: str = "elephant.off", size: int = 64, repeats: int = 3) -> Row:
    mesh = normalise(read_solid(mesh_folder(None) / mesh_name), 0.9)
    assert torch.equal(rasterise(mesh, size).depth, loop_depth(mesh, size)), "the two z-buffers differ"
    t = interleaved({"batched": lambda: rasterise(mesh, size), "loop": lambda: loop_depth(mesh, size)}, repeats)
    return Row(f"rasterise {mesh_name} ({len(mesh.faces):,} faces) at {size} x {size}",
               "plain PyTorch loop over faces", "renders/s", [1 / s for s in t["batched"]], [1 / s for s in t["loop"]],
               higher_is_better=True, note="depth buffers equal")


def loop_soft_silhouette(v: torch.Tensor, faces: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """The soft silhouette [size, size] of one mesh, one face at a time."""
    p = pixel_centres(size, 1.0).to(v.dtype)
    log_empty = torch.zeros(len(p), dtype=v.dtype)
    for f in faces:
        sd, _, _ = face_terms(v[f][None, None], p)
        log_empty += torch.nn.functional.logsigmoid(-sd[0, :, 0] / sigma)
    return (1 - log_empty.exp()).view(size, size)


def soft_row(mesh_name: str = "elephant.off", size: int = 32, repeats: int = 3, sigma: float = 1e-4) -> Row:
    mesh = normalise(read_solid(mesh_folder(None) / mesh_name), 0.9)
    v = mesh.vertices.float()
    batched = soft_render(v[None], mesh.faces, size=size, sigma=sigma)[0][0]
    assert torch.allclose(batched, loop_soft_silhouette(v, mesh.faces, size, sigma), atol=1e-5), "silhouettes differ"
    t = interleaved({"batched": lambda: soft_render(v[None], mesh.faces, size=size, sigma=sigma),
                     "loop": lambda: loop_soft_silhouette(v, mesh.faces, size, sigma)}, repeats)
    return Row(f"soft silhouette {mesh_name} ({len(mesh.faces):,} faces) at {size} x {size}",
               "plain PyTorch loop over faces", "renders/s", [1 / s for s in t["batched"]], [1 / s for s in t["loop"]],
               higher_is_better=True, note="silhouettes agree to 1e-5")


def near_row(batch: int = 24, parts: int = 8, size: int = 32, repeats: int = 3) -> Row:
    """Cerberus' workload: a training step's renders (batch images of `parts` small spheres of 80 faces, shaded, at
    Soft Rasterizer's σ = 1e-4), forward and backward, visiting only the pixels near each face (threshold 1e-4)
    against every pixel-face pair."""
    from zoo.models.cerberus.model import icosphere

    g = torch.Generator().manual_seed(0)
    u, f = icosphere(1)
    centres = (torch.rand(batch, parts, 1, 3, generator=g) - 0.5) * 0.8
    v = (0.1 * u + centres).flatten(1, 2)
    faces = (f[None] + torch.arange(parts)[:, None, None] * len(u)).flatten(0, 1)
    colours = torch.rand(batch, len(faces), 1, generator=g)

    def step(threshold: float):
        x = v.clone().requires_grad_()
        sil, img = soft_render(x, faces, colours, size, 0.55, 1e-4, 3e-3, -1.1, 1.1, threshold=threshold)
        (sil.sum() + img.sum()).backward()
        return sil.detach(), img.detach()

    near, every = step(1e-4), step(0.0)
    assert torch.allclose(near[0], every[0], atol=1e-3), "silhouettes differ"
    t = interleaved({"near": lambda: step(1e-4), "all": lambda: step(0.0)}, repeats)
    return Row(f"soft render, near pairs: {batch} images x {parts} spheres ({len(faces)} faces) at {size} x {size}, "
               "forward + backward", "every pixel-face pair (same function, threshold 0)", "steps/s",
               [1 / s for s in t["near"]], [1 / s for s in t["all"]], higher_is_better=True,
               note="silhouettes agree to 1e-3")


def rows(repeats: int = 3, device: str = "cpu") -> list[Row]:
    return [row(repeats=repeats), soft_row(repeats=repeats), near_row(repeats=repeats)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mesh", default="elephant.off")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print_rows([row(a.mesh, a.size, a.repeats), soft_row(a.mesh, a.size // 2, a.repeats), near_row(repeats=a.repeats)])


if __name__ == "__main__":
    main()
