"""The shared shape parts: solid meshes read from real OFF files (and refused when open, empty or unreadable),
winding-number inside tests against exact answers, surface samples, marching cubes, and the Chamfer distance,
F-score and occupancy IoU against hand-derived values and brute force."""
import math

import pytest
import torch

from zoo.data.meshes import (Mesh, SolidMeshDataModule, depth_views, grid_points3, inside, marching_cubes, normalise,
                             read_solid, sample_surface, winding_numbers)
from zoo.metrics import chamfer_distance, fscore, nearest_distances, occupancy_iou

pytest.importorskip("trimesh")

from mesh_fixture import CUBE_F, CUBE_V, write_meshes, write_off


def test_cube_from_off_winding_numbers_are_exact(tmp_path):
    m = read_solid(write_off(tmp_path / "cube.off", CUBE_V, CUBE_F))
    assert m.faces.shape == (12, 3)  # quads triangulated
    pts = torch.tensor([[1.0, 1.0, 1.0], [0.1, 1.9, 0.5], [3.0, 1.0, 1.0], [-0.5, -0.5, -0.5], [1.0, 1.0, 2.5]])
    w = winding_numbers(m, pts, chunk=7)  # tiny chunks: the result must not depend on them
    assert torch.allclose(w, torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]), atol=1e-5)
    w64 = winding_numbers(m, pts, dtype=torch.float64)
    assert w64.dtype == torch.float64 and torch.allclose(w64, torch.tensor([1.0, 1.0, 0, 0, 0], dtype=torch.float64), atol=1e-12)
    assert inside(m, pts).tolist() == [True, True, False, False, False]
    n = normalise(m)
    assert torch.allclose(n.vertices.amin(0), torch.full((3,), -0.5, dtype=torch.float64))
    assert torch.allclose(n.vertices.amax(0), torch.full((3,), 0.5, dtype=torch.float64))


def test_inward_faces_are_turned_outward(tmp_path):
    m = read_solid(write_off(tmp_path / "inverted.off", CUBE_V, [tuple(reversed(f)) for f in CUBE_F]))
    assert winding_numbers(m, torch.tensor([[1.0, 1.0, 1.0]])).item() == pytest.approx(1.0)


def test_winding_number_of_a_sphere_matches_the_distance_to_its_centre():
    trimesh = pytest.importorskip("trimesh")
    s = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    m = Mesh(torch.as_tensor(s.vertices), torch.as_tensor(s.faces))
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(2000, 3, generator=g, dtype=torch.float64) - 0.5
    r = pts.norm(dim=-1)
    clear = (r - 0.4).abs() > 0.01  # the polyhedron departs from the sphere by < 0.01
    assert torch.equal(inside(m, pts)[clear], (r < 0.4)[clear])


def test_bad_meshes_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"open\.off.*open or non-manifold.*fill_holes"):
        read_solid(write_off(tmp_path / "open.off", CUBE_V, CUBE_F[:-1]))
    with pytest.raises(ValueError, match=r"points\.off.*no triangles"):
        read_solid(write_off(tmp_path / "points.off", CUBE_V, []))
    (tmp_path / "junk.off").write_text("OFF\n3 1 0\n0 0\n")
    with pytest.raises(ValueError, match=r"junk\.off"):
        read_solid(tmp_path / "junk.off")
    with pytest.raises(FileNotFoundError, match="missing.off"):
        read_solid(tmp_path / "missing.off")


def test_surface_samples_lie_on_the_faces_uniformly(tmp_path):
    m = read_solid(write_off(tmp_path / "cube.off", CUBE_V, CUBE_F))
    p = sample_surface(m, 6000, torch.Generator().manual_seed(0))
    on_face = ((p - 0).abs() < 1e-9) | ((p - 2).abs() < 1e-9)
    assert on_face.any(-1).all() and (p >= 0).all() and (p <= 2).all()
    share = torch.stack([(p[:, i].abs() < 1e-9).float().mean() for i in range(3)])
    assert torch.allclose(share, torch.full((3,), 1 / 6, dtype=torch.float32), atol=0.02)  # six equal faces


def test_marching_cubes_of_a_ball_is_closed_outward_and_of_the_right_volume():
    n = 40
    t = (torch.arange(n) + 0.5) / n - 0.5
    x, y, z = torch.meshgrid(t, t, t, indexing="ij")
    occ = ((x.square() + y.square() + (z - 0.1).square()).sqrt() < 0.3).double()
    m = marching_cubes(occ)
    tri = m.triangles
    volume = (tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2])).sum() / 6  # > 0: faces point outward
    assert volume.item() == pytest.approx(4 / 3 * math.pi * 0.3 ** 3, rel=0.05)
    centre = m.vertices.mean(0)
    assert torch.allclose(centre, torch.tensor([0.0, 0.0, 0.1], dtype=torch.float64), atol=0.01)


def test_chamfer_fscore_and_iou_by_hand():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 0.1], [1.0, 0.0], [3.0, 0.0]])
    assert nearest_distances(a, b).tolist() == pytest.approx([0.1, 0.0])
    assert nearest_distances(b, a).tolist() == pytest.approx([0.1, 0.0, 2.0])
    assert chamfer_distance(a, b).item() == pytest.approx((0.01 + 0) / 2 + (0.01 + 0 + 4) / 3)
    # tau 0.05: precision 1/2 (only (1, 0) is that close), recall 1/3; F = 2 PR / (P + R) = 0.4
    assert fscore(a, b, tau=0.05).item() == pytest.approx(0.4)
    assert fscore(a, b, tau=0.2).item() == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    g = torch.Generator().manual_seed(1)
    p, q = torch.rand(2, 50, 3, generator=g), torch.rand(2, 70, 3, generator=g)
    brute = torch.stack([torch.stack([(q[i] - x).norm(dim=-1).min() for x in p[i]]) for i in range(2)])
    assert torch.allclose(nearest_distances(p, q), brute, atol=1e-6)  # KD-tree
    pg = p.clone().requires_grad_()
    assert torch.allclose(nearest_distances(pg, q, chunk=8), brute, atol=1e-6)  # differences, with gradients
    assert torch.allclose(nearest_distances(p[0], q[0]), brute[0], atol=1e-6)  # one set, no batch
    with pytest.raises(ValueError, match="empty point cloud"):
        chamfer_distance(torch.zeros(0, 3), q[0])
    with pytest.raises(ValueError, match="empty point cloud"):
        fscore(p, torch.zeros(2, 0, 3))
    assert occupancy_iou(torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]), torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0]])).tolist() \
        == pytest.approx([1 / 3, 1.0])


def test_solid_mesh_datamodule_labels_exactly_and_skips_open_meshes(tmp_path):
    folder = write_meshes(tmp_path / "meshes")
    dm = SolidMeshDataModule(data_dir=str(folder), res=8, cached_points=300, box_points=20, surface_points=12,
                             batch_size=2)
    dm.prepare_data()
    dm.setup()
    assert dm.names == ["cube.off", "long_box.off", "octahedron.off", "tetrahedron.off"]
    assert "open or non-manifold" in dm.skipped["open_cube.off"]
    c = dm.train_set.c
    g = grid_points3(8)
    # the cube normalised to [-0.4, 0.4]³: exactly the cell centres within 0.4 are inside (the inner 6³ cells)
    assert torch.equal(c["grid"][0].reshape(-1), (g.abs() < 0.4).all(-1))
    assert c["grid"][0].sum() == 6 ** 3
    # the long box: 0.8 along x, 0.2 along y and z
    assert torch.equal(c["grid"][1].reshape(-1), (g.abs() < torch.tensor([0.4, 0.1, 0.1], dtype=g.dtype)).all(-1))
    inside_box = (c["box_points"][0].abs() < 0.4).all(-1)
    assert torch.equal(c["box_inside"][0], inside_box)
    assert (c["surface"][0].abs().amax(-1) - 0.4).abs().max() < 1e-6  # on the cube's faces
    assert (c["near_points"][0] - c["surface"][0]).std() == pytest.approx(0.01, rel=0.15)
    views, pts, occ, idx = next(iter(dm.train_dataloader()))
    assert views.shape == (2, 6, 8, 8) and pts.shape == (2, 32, 3) and occ.shape == (2, 32) and idx.shape == (2,)
    views, pts, occ, idx = dm.test_set.__getitems__([0, 3])
    assert pts.shape == (2, 512, 3) and torch.equal(occ[0].bool(), c["grid"][0].reshape(-1))
    again = SolidMeshDataModule(data_dir=str(folder), res=8, cached_points=300)
    assert again.cache_folder(sorted(folder.iterdir())) == dm.cache_folder(sorted(folder.iterdir()))


def test_depth_views_of_a_cube_by_hand():
    grid = torch.zeros(1, 8, 8, 8, dtype=torch.bool)
    grid[0, 1:7, 2:6, 3:5] = True
    v = depth_views(grid)
    assert v.shape == (1, 6, 8, 8)
    # along +x the first occupied cell is 1, along -x it is 8 - 7 = 1; y: 2 and 2; z: 3 and 3; misses are 1.0
    for view, first, (a, b) in ((0, 1, (slice(2, 6), slice(3, 5))), (1, 1, (slice(2, 6), slice(3, 5))),
                                (2, 2, (slice(1, 7), slice(3, 5))), (4, 3, (slice(1, 7), slice(2, 6)))):
        hit = torch.zeros(8, 8, dtype=torch.bool)
        hit[a, b] = True
        assert torch.equal(v[0, view][hit], torch.full((int(hit.sum()),), first / 8))
        assert (v[0, view][~hit] == 1).all()


def test_folder_without_meshes_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no mesh files"):
        SolidMeshDataModule(data_dir=str(tmp_path)).prepare_data()
    write_off(tmp_path / "open.off", CUBE_V, CUBE_F[:-1])
    with pytest.raises(ValueError, match="none of the 1 mesh files is a closed solid"):
        SolidMeshDataModule(data_dir=str(tmp_path)).prepare_data()


# ---------------------------------------------------------------- ShapeNet in the Occupancy Networks layout
def write_occnet(root, synset="02691156", models=("a1", "b2", "c3"), n=40):
    """Tiny files in the Occupancy Networks layout: points.npz (float16 points, bit-packed occupancies of the ball
    of radius 0.3), 24 JPEG renders, and train/val/test lists."""
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    for m in models:
        folder = root / synset / m
        (folder / "img_choy2016").mkdir(parents=True)
        pts = (g.random((n, 3)) - 0.5).astype(np.float16)
        occ = np.linalg.norm(pts.astype(np.float32), axis=1) < 0.3
        np.savez(folder / "points.npz", points=pts, occupancies=np.packbits(occ), loc=np.zeros(3), scale=np.ones(1))
        for v in range(24):
            Image.fromarray(np.full((137, 137, 3), v * 10, np.uint8)).save(folder / "img_choy2016" / f"{v:03d}.jpg")
    for split, ids in (("train", models[:2]), ("val", models[2:]), ("test", models[2:])):
        (root / synset / f"{split}.lst").write_text("\n".join(ids) + "\n")
    return root


def test_shapenet_occnet_layout_reads_points_and_renders(tmp_path):
    from zoo.data.shapenet import ShapeNetOccupancyDataModule, read_points

    root = write_occnet(tmp_path / "ShapeNet")
    p, o = read_points(root / "02691156" / "a1" / "points.npz")
    assert p.shape == (40, 3) and p.dtype == torch.float32 and torch.equal(o, p.norm(dim=-1) < 0.3)
    dm = ShapeNetOccupancyDataModule(data_dir=str(root), image_size=32, box_points=16, eval_points=30, batch_size=2)
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_set) == 2 and len(dm.val_set) == len(dm.test_set) == 1
    images, pts, occ, idx = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and pts.shape == (2, 16, 3) and occ.shape == (2, 16)
    assert torch.equal(occ.bool(), pts.norm(dim=-1) < 0.3)
    images, pts, occ, _ = dm.test_set.__getitems__([0])
    assert pts.shape == (1, 30, 3) and images[0].max() < 0.02  # render 000 (all black) and the first 30 points


def test_shapenet_errors_say_what_is_missing(tmp_path):
    import numpy as np

    from zoo.data.shapenet import ShapeNetOccupancyDataModule, read_points

    with pytest.raises(FileNotFoundError, match="data_dir=ROOT"):
        ShapeNetOccupancyDataModule(data_dir=str(tmp_path / "nowhere")).prepare_data()
    root = write_occnet(tmp_path / "ShapeNet")
    (root / "02691156" / "train.lst").write_text("a1\nzz9\n")
    with pytest.raises(FileNotFoundError, match="1 model folders listed in the train split are missing"):
        ShapeNetOccupancyDataModule(data_dir=str(root)).prepare_data()
    np.savez(tmp_path / "bad.npz", pts=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="'points'"):
        read_points(tmp_path / "bad.npz")
