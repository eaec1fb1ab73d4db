"""The soft rasteriser against hand-derived distances, the analytic disc and shading of a sphere, the hard z-buffer it
tends to as σ, γ → 0, its near-pairs mode against every pair, and finite differences for its gradients."""
import math

import torch

from zoo.data.meshes import Mesh
from zoo.data.render import rasterise
from zoo.nn.soft_raster import face_terms, soft_render

TRI = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)


def test_signed_distance_and_depth_by_hand():
    """Inside (0.2, 0.3): nearest edge x = 0 at 0.2, so +0.04; outside (-0.3, 0.5): the edge x = 0 at 0.3, so -0.09;
    beyond a corner (1.3, -0.4): the corner (1, 0) at 0.5, so -0.25. Depth on a tilted face z = x + 2y."""
    tri = TRI.clone()
    tri[0, :, 2] = tri[0, :, 0] + 2 * tri[0, :, 1]
    p = torch.tensor([[0.2, 0.3], [-0.3, 0.5], [1.3, -0.4]], dtype=torch.float64)
    sd, z, bary = face_terms(tri[:, None], p)
    assert torch.allclose(sd[0, :, 0], torch.tensor([0.04, -0.09, -0.25], dtype=torch.float64))
    assert torch.allclose(z[0, :, 0], p[:, 0] + 2 * p[:, 1])  # extrapolated outside the face too
    assert torch.allclose(bary.sum(-1), torch.ones(1, 3, 1, dtype=torch.float64))


def octahedron() -> Mesh:
    v = [(0.8, 0, 0), (-0.8, 0, 0), (0, 0.8, 0), (0, -0.8, 0), (0, 0, 0.8), (0, 0, -0.8)]
    f = [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (2, 0, 5), (1, 2, 5), (3, 1, 5), (0, 3, 5)]
    return Mesh(torch.tensor(v, dtype=torch.float64), torch.tensor(f))


def test_sharp_limits_equal_the_z_buffer():
    """With σ and γ tiny, the silhouette is the z-buffer's coverage and the image shows the nearest face's colour,
    for a turned octahedron whose faces overlap in the image."""
    mesh = octahedron()
    c, s = torch.cos(torch.tensor(0.6, dtype=torch.float64)), torch.sin(torch.tensor(0.6, dtype=torch.float64))
    R = torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)
    hard = rasterise(mesh, 24, 1.0, R)
    v = (mesh.vertices @ R.T)[None]
    colours = torch.arange(8, dtype=torch.float64)[None, :, None]
    sil, img = soft_render(v, mesh.faces, colours, size=24, sigma=1e-9, gamma=1e-6)
    assert torch.equal(sil[0] > 0.5, hard.mask)
    assert torch.allclose(img[0, ..., 0][hard.mask], hard.face[hard.mask].double(), atol=1e-6)


def test_chunks_do_not_change_the_result():
    mesh = octahedron()
    v = mesh.vertices[None].repeat(2, 1, 1)
    v[1] *= 0.7
    colours = torch.rand(2, 8, 3, dtype=torch.float64)
    one = soft_render(v, mesh.faces, colours, size=10, sigma=1e-3, gamma=1e-2)
    many = soft_render(v, mesh.faces, colours, size=10, sigma=1e-3, gamma=1e-2, chunk=50)
    assert torch.allclose(one[0], many[0]) and torch.allclose(one[1], many[1])
    assert (one[0][1].sum() < one[0][0].sum())  # the smaller mesh covers less


def test_gradients_match_finite_differences():
    """Silhouette and image are smooth in the vertices at σ, γ > 0: autograd against central differences."""
    torch.manual_seed(0)
    mesh = octahedron()
    v = (mesh.vertices + 0.05 * torch.randn_like(mesh.vertices))[None].requires_grad_()
    colours = torch.rand(1, 8, 2, dtype=torch.float64)

    def f(x):
        sil, img = soft_render(x, mesh.faces, colours, size=6, sigma=3e-2, gamma=1e-1)
        return sil.sum() + img.pow(2).sum()

    assert torch.autograd.gradcheck(f, (v,), eps=1e-6, atol=1e-5)
    f(v).backward()
    assert v.grad.abs().sum() > 0


def test_near_pairs_equal_every_pair_where_far_faces_are_negligible():
    """With a threshold, only pixels near each face are visited: the silhouette and (at a γ where far faces weigh
    nothing) the image equal the all-pairs computation, and so do their gradients."""
    torch.manual_seed(0)
    mesh = octahedron()
    v = torch.stack([mesh.vertices * 0.5, mesh.vertices * 0.3 + 0.2])
    v = (v + 0.02 * torch.randn_like(v)).requires_grad_()
    colours = torch.rand(2, 8, 2, dtype=torch.float64)
    kw = dict(size=16, sigma=1e-3, gamma=0.5)
    dense = soft_render(v, mesh.faces, colours, **kw)
    near = soft_render(v, mesh.faces, colours, threshold=1e-10, **kw)
    assert torch.allclose(dense[0], near[0], atol=1e-8) and torch.allclose(dense[1], near[1], atol=1e-8)
    g1 = torch.autograd.grad(dense[0].sum() + dense[1].pow(2).sum(), v)[0]
    g2 = torch.autograd.grad(near[0].sum() + near[1].pow(2).sum(), v)[0]
    assert torch.allclose(g1, g2, atol=1e-6)


def test_near_pairs_keep_the_z_buffer_limit():
    mesh = octahedron()
    c, s = torch.cos(torch.tensor(0.6, dtype=torch.float64)), torch.sin(torch.tensor(0.6, dtype=torch.float64))
    R = torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)
    hard = rasterise(mesh, 24, 1.0, R)
    colours = torch.arange(8, dtype=torch.float64)[None, :, None]
    sil, img = soft_render((mesh.vertices @ R.T)[None], mesh.faces, colours, size=24, sigma=1e-9, gamma=1e-6,
                           threshold=1e-8)
    assert torch.equal(sil[0] > 0.5, hard.mask)
    assert torch.allclose(img[0, ..., 0][hard.mask], hard.face[hard.mask].double(), atol=1e-6)


def test_a_sphere_renders_as_the_analytic_disc_and_shading():
    """A unit icosphere (level 3, 1,280 faces) scaled to r = 0.6, flat-shaded under a light from the camera: the
    silhouette covers π r² (the inscribed polygon a little less), and inside, each pixel's intensity is n_z of the
    sphere there, sqrt(1 − (x² + y²) / r²), up to flat shading's facets."""
    from zoo.data.render import pixel_centres
    from zoo.models.cerberus.model import face_shading, icosphere

    u, f = icosphere(3)
    v = (0.6 * u.double())[None]
    shade = face_shading(v[:, f], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), 0.0)[..., None]
    S = 64
    sil, img = soft_render(v, f, shade, size=S, sigma=1e-6, gamma=1e-4, threshold=1e-8)
    area = sil.sum().item() * (2.0 / S) ** 2
    assert 0.97 * math.pi * 0.36 < area < 1.005 * math.pi * 0.36
    p = pixel_centres(S, 1.0)
    r2 = (p ** 2).sum(1).view(S, S)
    inside = r2 < (0.9 * 0.6) ** 2
    analytic = (1 - r2 / 0.36).clamp_min(0).sqrt()
    assert (img[0, ..., 0] - analytic)[inside].abs().max() < 0.06
