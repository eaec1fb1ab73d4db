"""NASA: part frames, blending and the three losses against hand values, the batched part networks against a loop
over parts, what R and D may depend on, invariance to moving the whole scene, overfitting one batch and the release
round trip."""
import math

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.models.nasa import NASA, NASAModule, NASAOutput, PartMLPs, blend, nasa_losses, to_part_frames


def rigid(angle: float, t, axis: int = 2) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    R = torch.eye(3)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    T = torch.eye(4)
    T[:3, :3], T[:3, 3] = R, torch.tensor(t, dtype=torch.float32)
    return T


def test_points_in_part_frames_by_hand():
    """Part 0 turned 90° about z and moved by (1, 0, 0): (1, 0, 0) -> (1, 1, 0); part 1 the identity."""
    T = torch.stack([rigid(math.pi / 2, [1.0, 0, 0]), torch.eye(4)])[None]
    x = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])
    p = to_part_frames(x, T)
    assert torch.allclose(p[0, 0], torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 2.0]]), atol=1e-6)
    assert torch.equal(p[0, 1], x[0])


def test_blending_by_hand():
    """One part at 1 and 23 at 0: O = e⁵ / (e⁵ + 23) = 0.866 (α = 5); one at 0.6: 0.6 e³ / (e³ + 23) = 0.28, below
    the level set even though that part is above it; α < 0 takes the max."""
    parts = torch.zeros(1, 24, 2)
    parts[0, 0] = torch.tensor([1.0, 0.6])
    O = blend(parts, 5.0)
    assert torch.allclose(O, torch.tensor([[math.exp(5) / (math.exp(5) + 23), 0.6 * math.exp(3) / (math.exp(3) + 23)]]))
    assert O[0, 0] == pytest.approx(0.866, abs=1e-3) and O[0, 1] == pytest.approx(0.28, abs=5e-3)
    assert torch.equal(blend(parts, -1.0), parts.amax(1))


def test_part_mlps_equal_a_loop_over_parts():
    torch.manual_seed(0)
    mlps = PartMLPs(3, 7, 5)
    x = torch.randn(3, 11, 7)
    out = mlps(x)
    for k in range(3):
        W = [w[k] for w in mlps.weights]
        b = [v[k, 0] for v in mlps.biases]
        h = F.leaky_relu(x[k] @ W[0] + b[0], 0.1)
        for i in (1, 2, 3):
            h = F.leaky_relu(h @ W[i] + b[i] + h, 0.1)
        assert torch.allclose(out[k], h @ W[4] + b[4], atol=1e-6)
    assert mlps.weights[0].shape == (3, 7, 5) and mlps.weights[4].shape == (3, 5, 1)
    assert NASA(24).width == 40 and NASA(19).width == math.ceil(960 / 19)


def scene(B=2, K=4, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = torch.stack([torch.stack([rigid(float(a), (torch.rand(3, generator=g) - 0.5).tolist())
                                  for a in torch.rand(K, generator=g) * 6]) for _ in range(B)])
    return torch.rand(B, N, 3, generator=g) - 0.5, T, torch.rand(B, 3, generator=g) - 0.5


def test_rigid_parts_see_only_their_own_bone_and_d_sees_the_pose():
    torch.manual_seed(0)
    x, T, root = scene()
    for deformable in (False, True):
        net = NASA(4, deformable, total_width=32)
        out = net(x, T, root)
        T2 = T.clone()
        T2[:, 1] = rigid(1.0, [0.2, 0.1, 0.0])
        out2 = net(x, T2, root)
        changed = (out.parts - out2.parts).abs().amax((0, 2)) > 1e-7
        if deformable:
            assert changed.all()  # every part's pose code reads every part's frame
        else:
            assert changed.tolist() == [False, True, False, False]
        assert not deformable or not torch.allclose(net(x, T, root + 0.3).O, out.O)
        assert deformable or torch.equal(net(x, T, root + 0.3).O, out.O)


def test_moving_the_whole_scene_changes_nothing():
    """Posed points G x, bones G B (so B⁻¹ G⁻¹) and root G r give the same occupancies, for R and D."""
    torch.manual_seed(0)
    x, T, root = scene()
    G = rigid(0.7, [0.3, -0.2, 0.5], axis=0)
    xg = x @ G[:3, :3].T + G[:3, 3]
    rg = root @ G[:3, :3].T + G[:3, 3]
    Tg = T @ torch.linalg.inv(G)
    for deformable in (False, True):
        net = NASA(4, deformable, total_width=32)
        assert torch.allclose(net(x, T, root).parts, net(xg, Tg, rg).parts, atol=1e-5)


def test_losses_by_hand():
    """Two parts, three points (the first two box samples), one vertex owned by part 1."""
    parts = torch.tensor([[[0.2, 0.4, 0.0], [0.6, 0.0, 1.0]]])
    O = torch.tensor([[0.5, 0.25, 0.75]])
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    at_v = torch.tensor([[[0.1], [0.3]]])
    loss = nasa_losses(NASAOutput(O, parts), labels, at_v, torch.tensor([[1]]), n_box=2)
    assert loss.occupancy.item() == pytest.approx((0.25 + 0.0625 + 0.0625) / 3)
    assert loss.label.item() == pytest.approx((0.01 + 0.04) / 2)          # targets 0 and 0.5
    assert loss.minimal.item() == pytest.approx((0.04 + 0.16 + 0.36 + 0.0) / 4)
    assert loss.total.item() == pytest.approx(loss.occupancy.item() + 0.5 * loss.label.item()
                                              + 0.05 * loss.minimal.item())


def batch(B=2, K=4, N=64, V=30, seed=0):
    """Two parts' worth of a toy body: points inside a ball around each part's origin are inside."""
    x, T, root = scene(B, K, N, seed)
    inside = (to_part_frames(x, T).norm(dim=-1) < 0.3).any(1).float()
    verts = torch.rand(B, V, 3) - 0.5
    return {"points": x, "occupancy": inside, "transforms": T, "root": root, "joints": torch.zeros(B, K, 3),
            "vertices": verts, "vertex_parts": torch.randint(0, K, (B, V))}


def test_overfits_one_batch():
    torch.manual_seed(0)
    b = batch()
    m = NASAModule(parts=4, total_width=64, n_box=64, sample_vertices=16, lr=3e-3)
    opt = m.configure_optimizers()

    def iou():
        with torch.no_grad():
            return m.iou_per_frame(m(b["points"], b["transforms"], b["root"]), b["occupancy"]).mean().item()

    before = iou()
    for _ in range(300):
        loss = m.losses(b).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert iou() > max(0.8, before + 0.3)


def test_shapes_and_chunked_evaluation():
    torch.manual_seed(0)
    b = batch(N=50)
    m = NASAModule(parts=4, total_width=32, eval_chunk=7).eval()
    out = m.occupancy(b["points"], b["transforms"], b["root"])
    assert out.O.shape == (2, 50) and out.parts.shape == (2, 4, 50)
    assert torch.allclose(out.O, m.net(b["points"], b["transforms"], b["root"]).O, atol=1e-6)
    near = m.near_joints(b["points"], b["joints"])
    assert torch.equal(near, b["points"].norm(dim=-1) <= 0.05)


def test_a_skeleton_of_another_size_is_refused_with_the_fix():
    m = NASAModule(parts=4, total_width=32)
    with pytest.raises(ValueError, match="5, 4, 4.*4 parts.*parts=5"):
        m(torch.rand(2, 10, 3), torch.eye(4).expand(2, 5, 4, 4), torch.zeros(2, 3))


def test_release_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    for deformable in (True, False):
        module = NASAModule(parts=4, deformable=deformable, total_width=32).eval()
        back = zoo.load(zoo.save_pretrained(module, tmp_path / str(deformable)))
        assert type(back) is NASAModule and back.state_dict().keys() == module.state_dict().keys()
        for k, v in module.state_dict().items():
            assert torch.equal(v, back.state_dict()[k]), k
        b = batch()
        with torch.no_grad():
            assert torch.equal(module(b["points"], b["transforms"], b["root"]),
                               back.eval()(b["points"], b["transforms"], b["root"]))
