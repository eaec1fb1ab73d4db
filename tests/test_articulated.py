"""The skinned capsule body: a closed solid whose skinning weights follow the bones, posing by forward kinematics
and linear blend skinning (the rest pose is the identity, one rigid part moves rigidly), exact occupancy labels, and
the DataModule's splits on a tiny CMU-layout clip."""
import math

import pytest
import torch

from bvh_fixture import write_clips
from zoo.data.articulated import (ArticulatedBodyDataModule, capsule_body, part_distances, part_transforms,
                                  segment_distances, skin)
from zoo.data.bvh import read_bvh


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("bvh"))


@pytest.fixture(scope="module")
def body_and_clip(clips):
    skel, motion, _ = read_bvh(clips / "01_01.bvh")
    return capsule_body(skel, res=32), skel, motion


def test_segment_distances_by_hand():
    bones = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]], [[0.0, 0, 0], [0.0, 0, 0]]], dtype=torch.float64)
    x = torch.tensor([[0.5, 2.0, 0], [-3.0, 0, 4.0]], dtype=torch.float64)
    d = segment_distances(x, bones)
    assert torch.allclose(d, torch.tensor([[2.0, math.hypot(0.5, 2)], [5.0, 5.0]], dtype=torch.float64))
    radii = torch.tensor([0.5, 1.0], dtype=torch.float64)
    pd = part_distances(x, bones, torch.tensor([0, 0]), radii, 2)  # both bones in part 0, none in part 1
    assert torch.allclose(pd[:, 0], torch.minimum(d[:, 0] - 0.5, d[:, 1] - 1.0))
    assert torch.isinf(pd[:, 1]).all()


def test_body_is_a_closed_solid_skinned_to_its_bones(body_and_clip):
    import trimesh

    body, skel, _ = body_and_clip
    tm = trimesh.Trimesh(body.mesh.vertices.numpy(), body.mesh.faces.numpy(), process=False)
    assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0
    assert torch.allclose(body.weights.sum(1), torch.ones(len(body.weights), dtype=torch.float64))
    assert len(body.parts) == 19 and body.labels.unique().numel() == 19  # every part owns some skin
    z = body.mesh.vertices[:, 2]
    assert (body.mesh.vertices[z.argmin(), 2] < -0.5) and abs((z.max() - z.min()).item() - 0.9 - 0.1) < 0.1
    # the lowest skin is a foot's, the highest the head's
    assert body.parts[body.labels[z.argmin()]] in ("LeftFoot", "RightFoot")
    assert body.parts[body.labels[z.argmax()]] == "Head"


def test_rest_pose_is_the_identity_and_a_turned_root_turns_the_whole_body(body_and_clip):
    body, skel, motion = body_and_clip
    rest = torch.zeros(1, skel.num_channels, dtype=torch.float64)
    M = part_transforms(body, skel, rest)
    assert torch.allclose(M, torch.eye(4, dtype=torch.float64).expand_as(M), atol=1e-12)
    assert torch.allclose(skin(body, M)[0], body.mesh.vertices, atol=1e-12)
    turned = rest.clone()
    turned[0, 4] = 90.0  # the root's Yrotation: about the BVH's up axis, the body's z
    V = skin(body, part_transforms(body, skel, turned))[0]
    v = body.mesh.vertices
    assert torch.allclose(V[:, 2], v[:, 2], atol=1e-9) and torch.allclose(V[:, :2].norm(dim=1), v[:, :2].norm(dim=1))
    assert not torch.allclose(V, v, atol=1e-3)


def test_posed_skin_bends_near_joints_only(body_and_clip):
    """Bending the left elbow moves the forearm and hand rigidly with it; vertices that blend upper arm and forearm
    move by a blend of the two, so they sit between the two rigid motions."""
    body, skel, _ = body_and_clip
    pose = torch.zeros(1, skel.num_channels, dtype=torch.float64)
    elbow = skel.index(["LeftForeArm"])[0]
    pose[0, skel.first[elbow]] = 60.0
    M = part_transforms(body, skel, pose)[0]
    V = skin(body, M[None])[0]
    k = body.parts.index("LeftForeArm")
    w = body.weights[:, k]
    v = body.mesh.vertices
    rigid = v @ M[k, :3, :3].T + M[k, :3, 3]
    assert torch.allclose(V[w > 0.999], rigid[w > 0.999], atol=1e-6)
    still = w < 1e-6
    assert torch.allclose(V[still & (body.weights[:, body.parts.index("LeftHand")] < 1e-6)],
                          v[still & (body.weights[:, body.parts.index("LeftHand")] < 1e-6)], atol=1e-5)
    mixed = (w > 0.2) & (w < 0.8)
    assert mixed.any()
    moved = (V[mixed] - v[mixed]).norm(dim=1)
    assert (moved > 0).all() and (moved < (rigid[mixed] - v[mixed]).norm(dim=1) + 1e-9).all()


def test_datamodule_labels_are_exact_and_splits_follow_the_clips(clips, tmp_path, monkeypatch):
    from zoo.data.meshes import Mesh, inside

    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    dm = ArticulatedBodyDataModule(bvh_dir=str(clips), train_every=3, val_every=6, test_every=2, box_points=64,
                                   surface_points=32, cached_points=100, eval_points=128, res=24, batch_size=2)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 2, 3)
    b = dm.train_set.__getitems__([0, 1])
    assert b["points"].shape == (2, 96, 3) and b["transforms"].shape == (2, 19, 4, 4) and b["joints"].shape == (2, 19, 3)
    mesh = Mesh(b["vertices"][0].double(), dm.body.mesh.faces)
    assert torch.equal(inside(mesh, b["points"][0].double()).float(), b["occupancy"][0])
    # each step draws from the frame's pools: box samples first, then near-surface ones; another batch with the
    # same frame draws other points, the same batch again the same ones (a resumed run sees the same data)
    pools = dm.train_set.c
    assert pools["box_points"].shape == pools["near_points"].shape == (4, 100, 3)
    assert all(any(torch.equal(p, q) for q in pools["box_points"][0]) for p in b["points"][0, :64])
    assert all(any(torch.equal(p, q) for q in pools["near_points"][0]) for p in b["points"][0, 64:])
    other = dm.train_set.__getitems__([0, 2])
    assert not torch.equal(other["points"][0], b["points"][0])
    assert torch.equal(dm.train_set.__getitems__([0, 1])["points"], b["points"])
    # a transform takes each vertex of its main part back near its rest place
    T = b["transforms"][0].double()
    vh = torch.cat([b["vertices"][0].double(), torch.ones(len(mesh.vertices), 1, dtype=torch.float64)], 1)
    back = torch.einsum("vij,vj->vi", T[b["vertex_parts"][0]], vh)[:, :3]
    assert (back - dm.body.mesh.vertices).norm(dim=1).median() < 0.02
    assert dm.test_set.__getitems__([0])["points"].shape == (1, 128, 3)
    again = ArticulatedBodyDataModule(bvh_dir=str(clips), train_every=3, val_every=6, test_every=2, box_points=64,
                                      surface_points=32, cached_points=100, eval_points=128, res=24, batch_size=2)
    again.setup()  # read from the cache
    assert torch.equal(again.train_set.c["box_inside"], dm.train_set.c["box_inside"])


def test_missing_clips_and_mismatched_skeletons_say_what_to_do(clips, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such BVH clip"):
        ArticulatedBodyDataModule(bvh_dir=str(tmp_path)).setup()
    other = tmp_path / "other"
    other.mkdir()
    (other / "01_01.bvh").write_text((clips / "01_01.bvh").read_text())
    (other / "01_03.bvh").write_text((clips / "01_03.bvh").read_text().replace("LeftHand", "LeftPaw"))
    with pytest.raises(ValueError, match="unknown joint|differs"):
        ArticulatedBodyDataModule(bvh_dir=str(other), train_every=6, val_every=12, test_every=3, box_points=8,
                                  surface_points=8, eval_points=8, res=16).setup()
