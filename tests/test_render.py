"""The orthographic z-buffer renderer against analytic renders: a sphere's silhouette, depth and normals, the
nearer of two overlapping squares, a rotated box, and Lambertian shading by hand."""
import math

import pytest
import torch

from zoo.data.meshes import Mesh
from zoo.data.render import lambertian, pixel_centres, rasterise


def sphere(radius: float = 0.8) -> Mesh:
    trimesh = pytest.importorskip("trimesh")
    m = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    return Mesh(torch.as_tensor(m.vertices), torch.as_tensor(m.faces, dtype=torch.long))


def test_sphere_silhouette_depth_and_normals_are_analytic():
    r = 0.8
    out = rasterise(sphere(r), size=40, extent=1.0)
    p = pixel_centres(40, 1.0).view(40, 40, 2)
    rho2 = p.square().sum(-1)
    inner, outer = rho2 < (0.95 * r) ** 2, rho2 > (1.02 * r) ** 2
    assert out.mask[inner].all() and not out.mask[outer].any()
    z = (r * r - rho2[inner]).sqrt()
    assert (out.depth[inner] - z).abs().max() < 0.01
    truth = torch.cat([p[inner], z[:, None]], -1) / r
    assert (out.normal[inner] - truth).norm(dim=-1).max() < 0.06
    assert torch.isinf(out.depth[~out.mask]).all() and (out.face[~out.mask] == -1).all()
    assert p[0, 0, 1] > 0 and p[0, 0, 0] < 0  # row 0 is the top row, column 0 the left


def test_the_nearer_of_two_squares_shows():
    v = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0],
                      [0.0, -0.5, 0.5], [1.0, -0.5, 0.5], [1.0, 0.5, 0.5], [0.0, 0.5, 0.5]], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    out = rasterise(Mesh(v, f), size=20, extent=1.0)
    p = pixel_centres(20, 1.0).view(20, 20, 2)
    front = (p[..., 0] > 0) & (p[..., 0] < 1) & (p[..., 1].abs() < 0.5)
    back_only = (p[..., 0] < 0) & (p[..., 0] > -0.5) & (p[..., 1].abs() < 0.5)
    assert torch.allclose(out.depth[front], torch.tensor(0.5, dtype=torch.float64))
    assert torch.allclose(out.depth[back_only], torch.tensor(0.0, dtype=torch.float64))
    assert (out.face[front] >= 2).all() and (out.face[back_only] <= 1).all()
    assert torch.allclose(out.normal[out.mask], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_a_rotated_box_turns_its_silhouette():
    trimesh = pytest.importorskip("trimesh")
    m = trimesh.creation.box(extents=(1.6, 0.4, 0.4))
    box = Mesh(torch.as_tensor(m.vertices), torch.as_tensor(m.faces, dtype=torch.long))
    wide = rasterise(box, size=32)
    c, s = math.cos(math.pi / 2), math.sin(math.pi / 2)
    tall = rasterise(box, size=32, rotation=torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]))
    assert torch.equal(wide.mask, tall.mask.T.flip(0)) or torch.equal(wide.mask, tall.mask.T.flip(1))
    assert wide.mask.any(0).sum() > 2 * wide.mask.any(1).sum()


def test_lambertian_shading_by_hand():
    normal = torch.zeros(2, 2, 3)
    normal[0, 0] = torch.tensor([0.0, 0.0, 1.0])
    normal[0, 1] = torch.tensor([1.0, 0.0, 0.0])
    albedo = torch.full((2, 2), 0.5)
    lights = torch.tensor([[0.0, 0.0, 1.0], [math.sqrt(0.5), 0.0, math.sqrt(0.5)], [0.0, 0.0, -1.0]])
    img = lambertian(albedo, normal, lights)
    assert img.shape == (3, 2, 2)
    assert img[0].tolist() == [[0.5, 0.0], [0.0, 0.0]]
    assert img[1, 0, 0].item() == pytest.approx(0.5 * math.sqrt(0.5)) and img[1, 0, 1].item() == pytest.approx(
        0.5 * math.sqrt(0.5))
    assert img[2].abs().max() == 0  # lit from behind: no light reaches the surface


def test_back_faces_are_culled_unless_two_sided():
    """A square wound clockwise as seen from the camera faces away: hidden for a closed mesh, shown with its
    normal turned to the camera when two_sided (an open mesh seen from behind)."""
    v = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0]], dtype=torch.float64)
    away = Mesh(v, torch.tensor([[0, 2, 1], [0, 3, 2]]))
    assert not rasterise(away, size=8).mask.any()
    both = rasterise(away, size=8, two_sided=True)
    assert both.mask.sum() == 16 and torch.allclose(both.normal[both.mask], torch.tensor([0.0, 0.0, 1.0],
                                                                                         dtype=torch.float64))
