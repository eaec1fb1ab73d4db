"""Readers of the datasets the shape and Lambertian papers' users have, on tiny files in the real layouts:
Extended Yale B (PGM faces named by their light), ShapeNetCore meshes (v1 and v2 folders) and the 3D-R2N2
renders with their cameras."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mesh_fixture import CUBE_F, CUBE_V, OCTA_F, OCTA_V, write_off


def write_pgm(path, image: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)  # Pillow writes binary PGM (P5) for a .pgm name


def test_yale_b_names_lights_and_split(tmp_path):
    from zoo.data.yaleb import YaleBDataModule, light_direction, parse_name, read_yaleb

    assert parse_name("yaleB11_P00A-005E+10.pgm") == (11, 0, -5.0, 10.0)
    assert parse_name("yaleB11_P00_Ambient.pgm") is None and parse_name("yaleB11_P00A+000E+00.pgm.bad") is None
    assert torch.allclose(light_direction(0.0, 0.0), torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(light_direction(90.0, 0.0), torch.tensor([1.0, 0.0, 0.0]), atol=1e-7)
    assert torch.allclose(light_direction(0.0, 90.0), torch.tensor([0.0, 1.0, 0.0]), atol=1e-7)
    d = light_direction(torch.tensor([-130.0, 35.0]), torch.tensor([20.0, -40.0]))
    assert torch.allclose(d.norm(dim=-1), torch.ones(2))
    lights = [(0, 0), (-5, 10), (20, -10), (35, 40), (-70, 0), (85, 20), (0, 90), (110, 15)]
    root = tmp_path / "CroppedYale"
    for subject in (1, 2, 3):
        for a, e in lights:
            img = np.full((12, 10), 10 * subject + len(lights), np.uint8)
            write_pgm(root / f"yaleB{subject:02d}" / f"yaleB{subject:02d}_P00A{a:+04d}E{e:+03d}.pgm", img)
        write_pgm(root / f"yaleB{subject:02d}" / f"yaleB{subject:02d}_P00_Ambient.pgm", np.zeros((12, 10), np.uint8))
    (root / "yaleB01" / "yaleB01_P00A+000E+00.pgm.bad").write_bytes(b"not an image")
    d = read_yaleb(root)
    assert d.images.shape == (24, 1, 12, 10) and sorted(set(d.subject.tolist())) == [1, 2, 3]
    dm = YaleBDataModule(data_dir=str(tmp_path), test_angle=60.0, val_size=3)
    dm.setup()
    # off-axis angles: 0, 11, 22, 53, 70, 86, 90, 111 degrees -> four lights per subject held out for test
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (9, 3, 12)
    x, light, subject = dm.test_set.__getitems__([0, 1])
    assert x.shape == (2, 1, 12, 10) and x.max() <= 1 and (light[:, 2] < math.cos(math.radians(60))).all()
    write_pgm(root / "yaleB04" / "yaleB04_P00A+000E+00.pgm", np.zeros((20, 10), np.uint8))
    with pytest.raises(ValueError, match="20 pixels"):
        read_yaleb(root)
    with pytest.raises(FileNotFoundError, match="Yale B"):
        YaleBDataModule(data_dir=str(tmp_path / "none")).setup()


def test_shapenet_core_meshes_as_point_clouds(tmp_path, zoo_home):
    import json

    from zoo.data.point_clouds import ShapeNetCoreDataModule

    import trimesh

    def write_obj(path, vertices, faces):
        path.parent.mkdir(parents=True, exist_ok=True)
        trimesh.load(str(write_off(tmp_path / "shape.off", vertices, faces))).export(str(path))

    root = tmp_path / "ShapeNetCore.v2"
    for i in range(5):  # category A in the v2 layout (cubes), category B in the v1 layout (octahedra)
        write_obj(root / "02691156" / f"m{i}" / "models" / "model_normalized.obj", CUBE_V, CUBE_F)
        write_obj(root / "03001627" / f"n{i}" / "model.obj", OCTA_V, OCTA_F)
    (root / "taxonomy.json").write_text(json.dumps([{"synsetId": "02691156", "name": "airplane,aeroplane,plane"},
                                                    {"synsetId": "03001627", "name": "chair"}]))
    dm = ShapeNetCoreDataModule(data_dir=str(tmp_path), points=50, cached_points=100, val_size=2)
    dm.setup()
    assert dm.classes == ("airplane", "chair")
    # AtlasNet's split: per category, the first 80% of the sorted ids train (4 + 4, of which 2 validate)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (6, 2, 2)
    x, y = dm.test_set.__getitems__([0, 1])
    assert x.shape == (2, 50, 3) and y.tolist() == [0, 1]
    assert x[0].abs().amax(0).allclose(torch.ones(3), atol=0.02)  # cube faces at ±1 after normalising
    assert (x[1].abs().sum(-1) - 1).abs().max() < 1e-4  # octahedron surface |x| + |y| + |z| = 1
    with pytest.raises(ValueError, match="not in"):
        ShapeNetCoreDataModule(data_dir=str(tmp_path), synsets=["04379243"]).setup()


def test_r2n2_renders_and_cameras(tmp_path):
    from zoo.data.shapenet import R2N2_FIELDS, read_r2n2_views

    folder = tmp_path / "ShapeNetRendering" / "02691156" / "m0" / "rendering"
    folder.mkdir(parents=True)
    names = [f"{i:02d}.png" for i in range(3)]
    for i, n in enumerate(names):
        rgba = np.zeros((137, 137, 4), np.uint8)
        rgba[60:70, 60:70] = (255, 0, 0, 255) if i == 0 else (0, 255, 0, 255)
        Image.fromarray(rgba, "RGBA").save(folder / n)
    (folder / "renderings.txt").write_text("\n".join(names) + "\n")
    (folder / "rendering_metadata.txt").write_text("\n".join(f"{30 * i} 25.5 0 0.8 25" for i in range(3)) + "\n")
    images, cams = read_r2n2_views(folder.parent)
    assert images.shape == (3, 4, 137, 137) and cams.shape == (3, len(R2N2_FIELDS))
    assert images[0, :, 65, 65].tolist() == [1.0, 0.0, 0.0, 1.0] and images[1, 3, 0, 0] == 0
    assert cams[:, 0].tolist() == [0.0, 30.0, 60.0] and cams[0, 3] == pytest.approx(0.8)
    (folder / "rendering_metadata.txt").write_text("0 1 2\n")
    with pytest.raises(ValueError, match="expected 3 lines of 5 numbers"):
        read_r2n2_views(folder)
