"""BVH motion capture: parsing, forward kinematics against hand values, scipy's Euler rotations and a recursive
loop over joints, the real CMU clips when Debian's assimp-testmodels is installed, and the errors."""
from pathlib import Path

import pytest
import torch

from zoo.data.bvh import BVHError, forward_kinematics, joint_positions, local_transforms, read_bvh

ARM = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Shoulder
  {
    OFFSET 1 0 0
    CHANNELS 3 Zrotation Yrotation Xrotation
    JOINT Elbow
    {
      OFFSET 2 0 0
      CHANNELS 3 Zrotation Yrotation Xrotation
      End Site
      {
        OFFSET 0 3 0
      }
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.01
10 20 30 0 0 0 0 0 0 0 0 0
10 20 30 90 0 0 0 0 0 0 0 90
"""
CMU = Path("/usr/share/assimp/models/BVH")


def write(tmp_path, text, name="arm.bvh") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_reads_the_hierarchy_and_motion(tmp_path):
    skel, motion, dt = read_bvh(write(tmp_path, ARM))
    assert skel.names == ("Hips", "Shoulder", "Elbow", "Elbow_end") and skel.parents == (-1, 0, 1, 2)
    assert skel.first == (0, 6, 9, 12) and skel.num_channels == 12 and motion.shape == (2, 12) and dt == 0.01
    assert torch.equal(skel.offsets[3], torch.tensor([0.0, 3.0, 0.0], dtype=torch.float64))


def test_forward_kinematics_by_hand(tmp_path):
    """Frame 0 is the rest pose moved to (10, 20, 30). Frame 1 turns the hips 90° about z, so the arm along +x
    points along +y, and bends the elbow 90° about x, so the end site's (0, 3, 0) turns to (0, 0, 3) in the elbow's
    frame: world (10, 20, 30) + (0, 1, 0) + (0, 2, 0) + Rz(90)·(0, 0, 3) = (10, 23, 33)."""
    skel, motion, _ = read_bvh(write(tmp_path, ARM))
    p = joint_positions(skel, motion)
    rest = torch.tensor([[10, 20, 30], [11, 20, 30], [13, 20, 30], [13, 23, 30]], dtype=torch.float64)
    assert torch.allclose(p[0], rest)
    moved = torch.tensor([[10, 20, 30], [10, 21, 30], [10, 23, 30], [10, 23, 33]], dtype=torch.float64)
    assert torch.allclose(p[1], moved, atol=1e-12)


def test_rotation_channels_compose_in_their_listed_order(tmp_path):
    """Each joint's rotation equals scipy's intrinsic Euler rotation in its channel order (upper-case axes)."""
    from scipy.spatial.transform import Rotation

    skel, motion, _ = read_bvh(write(tmp_path, ARM))
    g = torch.Generator().manual_seed(0)
    motion = (torch.rand(5, 12, generator=g, dtype=torch.float64) - 0.5) * 360
    local = local_transforms(skel, motion)
    for j, order in ((0, "ZXY"), (1, "ZYX"), (2, "ZYX")):
        cols = [skel.first[j] + k for k in range(len(skel.channels[j])) if skel.channels[j][k].endswith("rotation")]
        want = Rotation.from_euler(order, motion[:, cols].numpy(), degrees=True).as_matrix()
        assert torch.allclose(local[:, j, :3, :3], torch.from_numpy(want), atol=1e-12)
    assert torch.allclose(local[:, 0, :3, 3], motion[:, :3])  # the root's position channels


def test_world_transforms_equal_a_recursive_loop_over_joints(tmp_path):
    skel, _, _ = read_bvh(write(tmp_path, ARM))
    motion = (torch.rand(4, 12, dtype=torch.float64) - 0.5) * 360
    local = local_transforms(skel, motion)
    world = forward_kinematics(skel, motion)

    def chain(j):
        return local[:, j] if skel.parents[j] < 0 else chain(skel.parents[j]) @ local[:, j]

    for j in range(len(skel.names)):
        assert torch.allclose(world[:, j], chain(j), atol=1e-10)


@pytest.mark.skipif(not (CMU / "01_01.bvh").exists(), reason="apt-get install assimp-testmodels for the CMU clips")
def test_real_cmu_clip_keeps_every_bone_length():
    skel, motion, dt = read_bvh(CMU / "01_01.bvh")
    assert len(skel.names) == 38 and motion.shape == (2752, 96) and abs(dt - 1 / 120) < 1e-6
    p = joint_positions(skel, motion)
    par = torch.tensor(skel.parents[1:])
    lengths = (p[:, 1:] - p[:, par]).norm(dim=-1)
    assert torch.allclose(lengths, skel.offsets[1:].norm(dim=-1).expand_as(lengths), atol=1e-9)
    assert p[:, 0].std(0).max() > 1  # the subject moves


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("MOTION", "MOTON"), "unexpected 'MOTON'"),
    (lambda t: t.replace("CHANNELS 3 Zrotation Yrotation Xrotation\n    JOINT Elbow",
                         "CHANNELS 3 Zrotation Yrotation Wrotation\n    JOINT Elbow"), "unknown channel"),
    (lambda t: t.replace("10 20 30 90 0 0 0 0 0 0 0 90", "10 20 30 90 0 0 0 0 0 0 0"), "line 25: 11 values"),
    (lambda t: t.replace("Frames: 2", "Frames: 3"), "only 2 rows follow"),
    (lambda t: t.replace("HIERARCHY\n", ""), "starts with HIERARCHY"),
    (lambda t: t.rsplit("}", 1)[0] + t.rsplit("}", 1)[1], "incomplete"),
])
def test_bad_files_name_the_file_line_and_fix(tmp_path, edit, message):
    with pytest.raises(BVHError, match=message) as err:
        read_bvh(write(tmp_path, edit(ARM), "bad.bvh"))
    assert "bad.bvh" in str(err.value)


def test_unknown_joints_are_named_with_suggestions(tmp_path):
    skel, _, _ = read_bvh(write(tmp_path, ARM))
    assert skel.index(["Elbow", "Hips"]) == [2, 0]
    with pytest.raises(ValueError, match=r"unknown joint\(s\) \['Elbw'\].*did you mean \['Elbow'"):
        skel.index(["Elbw"])
    with pytest.raises(FileNotFoundError, match="no such BVH file"):
        read_bvh(tmp_path / "missing.bvh")
