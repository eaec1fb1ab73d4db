"""CvxNet: the smooth convex indicator and the five losses against hand-derived values and brute force, the
silhouette data's exact occupancy, shapes, overfitting one batch, and the release round trip."""
import math

import numpy as np
import pytest
import torch

import zoo
from zoo.data.silhouettes import SilhouetteDataModule, boundary_band, fill_silhouettes, grid_points, occupancy
from zoo.models.cvxnet import ConvexParams, CvxNetModule, MultiConvex, cvxnet_losses


def square(half: float = 0.2, delta: float = 300.0, c=(0.0, 0.0)) -> ConvexParams:
    """One convex: the axis-aligned square |x|, |y| ≤ half around c (normals ±x, ±y, offsets −half)."""
    n = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    return ConvexParams(n[None, None], torch.full((1, 1, 4), -half), torch.tensor([[c]]), torch.tensor([[delta]]))


# ---------------------------------------------------------------- the math
def test_indicator_of_a_square_by_hand():
    mc = MultiConvex(dims=2, K=1, H=4, sigma=75.0)
    p = square()
    x = torch.tensor([[[0.0, 0.0], [0.1, 0.05], [0.2, 0.2], [0.3, 0.0], [0.2, 0.0]]])
    phi = mc.phi(p, x)[0, 0]
    # Φ = LSE_h(δ H_h)/δ: at the centre all four planes are at −0.2, so Φ = −0.2 + log(4)/δ
    assert phi[0].item() == pytest.approx(-0.2 + math.log(4) / 300, abs=1e-6)
    hand = [torch.logsumexp(300 * torch.tensor([px - 0.2, -px - 0.2, py - 0.2, -py - 0.2]), 0).item() / 300
            for px, py in x[0].tolist()]
    assert phi.tolist() == pytest.approx(hand, abs=1e-6)
    occ = mc(p, x)
    C = torch.sigmoid(-75 * phi)
    assert torch.allclose(occ.O[0], C) and torch.allclose(occ.C[0, 0], C)
    assert occ.O[0, 0] > 0.99 and occ.O[0, 3] < 0.01  # inside, 0.1 outside
    # on a corner two planes are 0: Φ = log(2)/δ, so C = sigmoid(−75 log(2)/300); on a face Φ ≈ 0, C ≈ 0.5
    assert occ.O[0, 2].item() == pytest.approx(1 / (1 + 2 ** 0.25), abs=1e-5)
    assert occ.O[0, 4].item() == pytest.approx(0.5, abs=1e-5)
    # the decomposition loss's points: the query points followed by the translation, Σ_k C_k at each
    assert occ.overlap.shape == (1, 6) and torch.allclose(occ.overlap[0, :5], C)


def test_union_is_the_max_and_sharpness_sharpens():
    mc = MultiConvex(dims=2, K=2, H=4)
    a, b = square(c=(-0.2, 0.0)), square(c=(0.25, 0.0))
    p = ConvexParams(*(torch.cat([getattr(a, f), getattr(b, f)], 1) for f in ("n", "d", "c", "delta")))
    x = grid_points(32)[None]
    occ = mc(p, x)
    assert torch.equal(occ.O, occ.C.amax(1))
    assert torch.allclose(occ.overlap[:, :-2], occ.C.sum(1))
    inside_a = ((x[0] - torch.tensor([-0.2, 0.0])).abs() <= 0.2).all(-1)
    inside_b = ((x[0] - torch.tensor([0.25, 0.0])).abs() <= 0.2).all(-1)
    truth = (inside_a | inside_b).float()
    soft, hard = occ.O[0], MultiConvex(dims=2, K=2, H=4, sigma=3000.0)(p, x).O[0]
    assert ((soft >= 0.5).float() == truth).float().mean() > 0.97
    assert (hard - truth).abs().mean() < (soft - truth).abs().mean()


def test_split_follows_the_official_parametrisation():
    for dims in (2, 3):
        mc = MultiConvex(dims=dims, K=3, H=5)
        beta = torch.randn(4, mc.n_params) * 3
        p = mc.split(beta)
        assert p.n.shape == (4, 3, 5, dims) and p.d.shape == (4, 3, 5) and p.c.shape == (4, 3, dims)
        assert torch.allclose(p.n.norm(dim=-1), torch.ones(4, 3, 5), atol=1e-6)
        assert (p.d <= 0).all() and (p.d >= -0.5).all() and (p.delta >= 50).all() and (p.delta <= 300).all()
        blend, trans, planes = beta.split([3, 3 * dims, 3 * 5 * dims], -1)
        planes = planes.reshape(4, 3, 5, dims)
        assert torch.allclose(p.c, trans.reshape(4, 3, dims))
        assert torch.allclose(p.d, -0.5 * torch.sigmoid(planes[..., -1]))
        assert torch.allclose(p.delta, 50 + 250 * torch.sigmoid(blend))
        theta = torch.tanh(planes[..., 0]) * math.pi
        if dims == 2:
            assert torch.allclose(p.n, torch.stack([theta.cos(), theta.sin()], -1), atol=1e-6)
        else:
            alt = torch.tanh(planes[..., 1]) * math.pi
            assert torch.allclose(p.n[..., 2], alt.cos(), atol=1e-6)
            assert torch.allclose(p.n[..., 0], alt.sin() * theta.cos(), atol=1e-6)


def test_batched_half_spaces_equal_a_loop_over_convexes_and_planes():
    torch.manual_seed(0)
    mc = MultiConvex(dims=3, K=4, H=6)
    p = mc.split(torch.randn(2, mc.n_params))
    x = torch.rand(2, 7, 3) - 0.5
    phi = mc.phi(p, x)
    for b in range(2):
        for k in range(4):
            planes = torch.stack([(p.n[b, k, h] * (x[b] - p.c[b, k])).sum(-1) + p.d[b, k, h] for h in range(6)])
            ref = torch.logsumexp(p.delta[b, k] * planes, 0) / p.delta[b, k]
            assert torch.allclose(phi[b, k], ref, atol=1e-5)


def test_losses_by_hand():
    mc = MultiConvex(dims=2, K=1, H=4)
    p = square()
    x = torch.tensor([[[0.0, 0.0], [0.1, 0.1], [0.4, 0.4], [0.15, -0.1], [0.3, 0.0]]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0]])
    occ = mc(p, x)
    L = cvxnet_losses(occ, p, x, labels, n_box=3, guidance_k=2)
    sq = (labels - occ.O) ** 2
    assert L.approximation.item() == pytest.approx(sq[0, :3].mean().item() + 0.1 * sq[0, 3:].mean().item(), rel=1e-6)
    assert L.decomposition.item() == 0.0  # one convex: Σ C_k ≤ 1 < 2
    assert L.unique.item() == pytest.approx(0.04)
    top2 = sorted((occ.C[0, 0] * labels[0]).tolist())[-2:]
    assert L.guidance.item() == pytest.approx(sum((1 - v) ** 2 for v in top2) / 2, rel=1e-6)
    assert L.localisation.item() == 0.0  # c = (0, 0) is an inside point
    p.c += torch.tensor([0.1, 0.0])  # now 0.1 from the nearest inside point, (0, 0)... or (0.1, 0.1) at 0.1 too
    L = cvxnet_losses(mc(p, x), p, x, labels, n_box=3)
    assert L.localisation.item() == pytest.approx(0.01, rel=1e-5)
    total = (L.approximation + 0.1 * L.decomposition + 0.001 * L.unique + 0.01 * L.guidance + L.localisation)
    assert L.total.item() == pytest.approx(total.item(), rel=1e-6)


def test_decomposition_loss_counts_overlaps_beyond_two():
    mc = MultiConvex(dims=2, K=3, H=4)
    a = square()
    p = ConvexParams(a.n.expand(1, 3, 4, 2), a.d.expand(1, 3, 4), a.c.expand(1, 3, 2), a.delta.expand(1, 3))
    x = torch.zeros(1, 1, 2)
    occ = mc(p, x)  # three identical convexes: Σ C ≈ 3 at the point and at each of the three translations
    L = cvxnet_losses(occ, p, x, torch.ones(1, 1), n_box=1)
    expected = torch.relu(occ.overlap - 2).square().mean()
    assert L.decomposition.item() == pytest.approx(expected.item()) and L.decomposition.item() > 0.9


# ---------------------------------------------------------------- the data
def test_silhouette_occupancy_is_exact():
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, 1, 2] = True  # row 1, column 2
    # the 4x4 image spans [-0.4, 0.4]²: pixel (row 1, col 2) covers x in [0, 0.2), y in [-0.2, 0)
    pts = torch.tensor([[[0.1, -0.1], [0.0, -0.2], [0.199, -0.001], [0.2, -0.1], [0.1, 0.0], [0.45, 0.45]]])
    assert occupancy(masks, pts, 0.4).tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]
    band = boundary_band(masks)
    assert band.sum() == 9 and band[0, 1, 2] and band[0, 0, 1] and not band[0, 3, 0]


def test_holes_are_filled_and_thresholds_apply():
    img = np.zeros((1, 7, 7), np.uint8)
    img[0, 1:6, 1:6] = 200
    img[0, 3, 3] = 0  # an enclosed hole
    img[0, 0, 6] = 20  # below the 0.1 threshold (25.5)
    m = fill_silhouettes(torch.from_numpy(img), 0.1)
    assert m.dtype == torch.bool and m[0, 3, 3] and not m[0, 0, 6] and m.sum() == 25


def test_datamodule_samples_labelled_points(idx_dir):
    dm = SilhouetteDataModule(data_dir=str(idx_dir), val_size=40, batch_size=8, box_points=10, surface_points=6,
                              eval_grid=8, test_size=20)
    dm.setup()
    assert len(dm.train_set) == 200 and len(dm.val_set) == 40 and len(dm.test_set) == 20
    images, points, occ, y = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 28, 28) and points.shape == (8, 16, 2) and occ.shape == (8, 16) and y.shape == (8,)
    assert set(images.unique().tolist()) <= {0.0, 1.0} and (points.abs() <= 0.5).all()
    masks = images[:, 0].bool()
    assert torch.equal(occ, occupancy(masks, points, 0.4))
    near = points[:, 10:]
    assert 0 < occ[:, 10:].mean() < 1  # near-surface points fall on both sides
    again = dm.train_set.__getitems__(list(range(8)))
    assert torch.equal(again[1], dm.train_set.__getitems__(list(range(8)))[1])  # same batch, same points
    assert near.abs().max() <= 0.4
    images, points, occ, _ = next(iter(dm.val_dataloader()))
    assert points.shape == (8, 64, 2) and torch.equal(points[0], grid_points(8))


def test_bad_settings_say_what_to_do():
    with pytest.raises(ValueError, match="extent"):
        SilhouetteDataModule(extent=0.7)
    with pytest.raises(ValueError, match="box_points"):
        SilhouetteDataModule(box_points=0, surface_points=0)
    with pytest.raises(ValueError, match="dims"):
        MultiConvex(dims=4)


# ---------------------------------------------------------------- the module
def tiny(**kw) -> CvxNetModule:
    args = dict(dims=2, K=3, H=4, latent=8, hidden=[16], n_box=10, width=0.25)
    return CvxNetModule(**{**args, **kw})


def test_shapes_and_chunked_evaluation():
    torch.manual_seed(0)
    m = tiny(eval_chunk=5).eval()
    images, points = torch.rand(2, 1, 28, 28), torch.rand(2, 12, 2) - 0.5
    with torch.no_grad():
        occ = m.occupancy(images, points)
        whole, p = m.net(images, points)
    assert occ.O.shape == (2, 12) and occ.C.shape == (2, 3, 12) and occ.overlap.shape == (2, 15)
    assert torch.allclose(occ.O, whole.O, atol=1e-6) and torch.allclose(occ.overlap, whole.overlap, atol=1e-5)
    assert m(images, points).shape == (2, 12)
    m3 = CvxNetModule(dims=3, K=2, H=3, latent=8, hidden=[16], in_chans=3, width=0.25).eval()
    assert m3.net.convexes.n_params == 2 * (1 + 3 + 9)
    assert m3(torch.rand(1, 3, 32, 32), torch.rand(1, 5, 3)).shape == (1, 5)


@pytest.mark.parametrize("init,reach", [("torch", 0.6), ("keras", 0.4)])
def test_overfits_one_batch(idx_dir, init, reach):
    """Four digit silhouettes, trained on their own evaluation grid: IoU rises from chance to most of the shape.
    From the official (Keras) initialisation this small net rises more slowly (0.43-0.50 after 120 steps at two
    seeds, against 0.72-0.75 from PyTorch's), its first convexes scattered over the box."""
    torch.manual_seed(0)
    dm = SilhouetteDataModule(data_dir=str(idx_dir), val_size=40, eval_grid=24)
    dm.setup()
    batch = dm.val_set.__getitems__(list(range(4)))
    m = tiny(K=6, H=8, latent=32, hidden=[64], n_box=24 * 24, init=init)
    opt = torch.optim.Adam(m.parameters(), 3e-3)

    def iou():
        m.eval()
        with torch.no_grad():
            return m.iou_per_shape(m(*batch[:2]), batch[2]).mean().item()

    before = iou()
    for _ in range(120):
        m.train()
        loss = m.losses(batch).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert iou() > max(reach, before + 0.15)


def test_keras_initialisation_is_the_official_codes():
    """Glorot-uniform kernels (bound √(6 / (fan_in + fan_out)), conv fans counting the kernel's area), zero biases,
    and every BN at scale 1, where timm starts each residual block's last BN at 0."""
    net = tiny(init="keras").net
    conv = net.encoder.conv1
    fan_in, fan_out = conv.in_channels * 49, conv.out_channels * 49
    assert conv.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
    assert conv.weight.abs().max() > 0.9 * math.sqrt(6 / (fan_in + fan_out))
    dense = net.decoder[0]
    assert dense.weight.abs().max() <= math.sqrt(6 / (dense.in_features + dense.out_features)) and not dense.bias.any()
    assert all(bool((m.weight == 1).all()) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    timm_start = tiny(init="torch").net
    assert any(bool((m.weight == 0).all()) for m in timm_start.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(ValueError, match="keras"):
        tiny(init="tf")


def test_release_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    module = tiny().eval()
    back = zoo.load(zoo.save_pretrained(module, tmp_path / "release"))
    assert type(back) is CvxNetModule and back.state_dict().keys() == module.state_dict().keys()
    for k, v in module.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    images, points = torch.rand(2, 1, 28, 28), torch.rand(2, 9, 2) - 0.5
    with torch.no_grad():
        assert torch.equal(module(images, points), back.eval()(images, points))


def test_logsumexp_matches_torch_in_value_and_gradient():
    from zoo.models.cvxnet.model import _LogSumExp

    s = (torch.randn(3, 4, 5, 7, dtype=torch.double) * 50).requires_grad_()
    assert torch.allclose(_LogSumExp.apply(s), s.logsumexp(-1))
    assert torch.autograd.gradcheck(_LogSumExp.apply, (s,))
    far = torch.tensor([[0.0, -200.0, -1000.0]], requires_grad=True)  # terms far below the max: clamped at e⁻⁸⁰
    out = _LogSumExp.apply(far)
    out.sum().backward()
    assert out.item() == 0.0 and torch.allclose(far.grad, torch.tensor([[1.0, 0.0, 0.0]]), rtol=0, atol=1e-30)
