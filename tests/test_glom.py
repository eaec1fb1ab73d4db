"""GLOM: the four-term update and the attention against a column-by-column loop and hand values, the island scores,
ellipse world's labels, both objectives' losses, shapes, overfitting one batch, and the release round trip."""
import math

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.models.glom import GLOM, GLOMModule, island_scores
from zoo.models.glom.data import CLASSES, PATCH, SIZE, UNIT, EllipseWorldDataModule, ellipse_world, poses
from zoo.models.glom.model import grid_locations, neighbourhoods, patchify, unpatchify


def tiny(**kw) -> GLOMModule:
    args = dict(image_size=12, patch=3, levels=3, dim=8, hidden=16, freqs=2, radii=[1, 2, None], beta=[2.0, 3.0, 4.0],
                weights_of_terms=[0.5, 1.0, 2.0, 1.5], iterations=3)
    return GLOMModule(**(args | kw))


# ---------------------------------------------------------------- the math
def test_attention_weights_by_hand():
    """Three columns at one level, x = (1, 0), (0, 2), (3, 0): unit vectors give cosines 1, 0, 1 from column 0, so
    with β = ln 3 its weights are 3 : 1 : 3, and its new value (3·x0 + x1 + 3·x2) / 7."""
    net = GLOM(patch_dim=1, grid=(1, 3), levels=1, dim=2, radii=[None], beta=[math.log(3)])
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])[None, None]  # [L, B, N, d]
    out = net.attend(x)[0, 0]
    assert torch.allclose(out[0], (3 * x[0, 0, 0] + x[0, 0, 1] + 3 * x[0, 0, 2]) / 7)
    # column 1 is orthogonal to both others: weights e^{β·1} for itself and 1, 1 for the others
    assert torch.allclose(out[1], (x[0, 0, 0] + 3 * x[0, 0, 1] + x[0, 0, 2]) / 5)


def test_neighbourhoods_are_more_local_at_lower_levels():
    m = neighbourhoods((8, 8), [1, 2, None])
    assert m.shape == (3, 64, 64) and m.diagonal(dim1=1, dim2=2).all()
    assert m[0, 0].sum() == 4 and m[0, 9].sum() == 9 and m[1, 27].sum() == 25 and m[2].all()
    assert torch.equal(m, m.transpose(1, 2))


def test_update_equals_a_loop_over_columns_and_levels():
    """The batched step against each column's four contributions written out one level at a time."""
    torch.manual_seed(0)
    m = tiny()
    net = m.net
    patches = patchify(torch.rand(2, 1, 12, 12), 3)
    e = net.up_1(patches)
    x = torch.randn(3, 2, 16, 8)
    new = net.step(x, e)
    w_prev, w_up, w_down, w_att = [0.5, 1.0, 2.0, 1.5]
    loc = net.location
    for b in range(2):
        for i in range(16):
            for lvl in range(3):
                if lvl == 0:
                    up = e[b, i]
                else:
                    W1, W2, b1, b2 = (t[lvl - 1] for t in (net.up.w1, net.up.w2, net.up.b1, net.up.b2))
                    up = torch.relu(x[lvl - 1, b, i] @ W1 + b1[0]) @ W2 + b2[0]
                visible = [j for j in range(16) if max(abs(i // 4 - j // 4), abs(i % 4 - j % 4)) <= [1, 2, 99][lvl]]
                u = F.normalize(x[lvl, b], dim=-1)
                a = torch.exp(net.beta[lvl].item() * (u[visible] @ u[i]))
                att = (a[:, None] * x[lvl, b, visible]).sum(0) / a.sum()
                total = w_prev * x[lvl, b, i] + w_up * up + w_att * att
                norm = w_prev + w_up + w_att
                if lvl < 2:
                    W1, W2, b1, b2 = (t[lvl] for t in (net.down.w1, net.down.w2, net.down.b1, net.down.b2))
                    down = torch.relu(torch.cat([x[lvl + 1, b, i], loc[i]]) @ W1 + b1[0]) @ W2 + b2[0]
                    total, norm = total + w_down * down, norm + w_down
                assert torch.allclose(new[lvl, b, i], total / norm, atol=1e-5), (b, i, lvl)


def test_t0_is_each_column_alone_and_columns_share_weights():
    """At t = 0 a column depends on its own patch only: two images that differ in one patch differ in that column."""
    torch.manual_seed(0)
    net = tiny().net
    images = torch.rand(1, 1, 12, 12).repeat(2, 1, 1, 1)
    images[1, :, :3, :3] = torch.rand(3, 3)  # patch 0 only
    s0 = net(patchify(images, 3), 0)[0]
    same = (s0[:, 0] - s0[:, 1]).abs().amax((0, 2)) == 0
    assert not same[0] and same[1:].all()
    # identical patches at two locations give identical t = 0 columns (the same weights everywhere)
    flat = torch.zeros(1, 1, 12, 12)
    s0 = net(patchify(flat, 3), 0)[0]
    assert torch.equal(s0[:, 0, 0], s0[:, 0, 5])


def test_patches_and_locations_are_row_major():
    images = torch.arange(2 * 1 * 6 * 9, dtype=torch.float32).view(2, 1, 6, 9)
    p = patchify(images, 3)
    assert p.shape == (2, 6, 9) and torch.equal(p[0, 1], images[0, 0, :3, 3:6].flatten())
    assert torch.equal(unpatchify(p, (2, 3), 1), images)
    loc = grid_locations((2, 3))
    assert torch.allclose(loc[1], torch.tensor([0.0, -0.5])) and torch.allclose(loc[5], torch.tensor([2 / 3, 0.5]))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(torch.zeros(1, 1, 7, 7), 3)


def test_island_scores_by_hand():
    """Image 0: object 0 on columns 0, 1 (identical vectors), object 1 on column 2 (orthogonal), column 3 empty:
    within = 1, between = 0. Image 1: one object on columns 0, 1 at 60 degrees: within = 0.5, no between pairs."""
    z = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [5.0, 5.0]],
                      [[1.0, 0.0], [0.5, math.sqrt(3) / 2], [9.0, 9.0], [9.0, -9.0]]])
    owner = torch.tensor([[0, 0, 1, -1], [0, 0, -1, -1]])
    within, between = island_scores(z, owner)
    assert math.isclose(within.item(), 0.75, abs_tol=1e-6) and math.isclose(between.item(), 0.0, abs_tol=1e-6)


def test_classify_loss_is_the_mean_over_steps_and_occupied_columns():
    torch.manual_seed(0)
    m = tiny(num_classes=3)
    images = torch.rand(2, 1, 12, 12)
    labels = torch.tensor([[0, 1, -1, 2] * 4, [-1] * 15 + [1]])
    states = m.settle(images)
    loss = m.classify_loss(states, labels)
    terms = [F.cross_entropy(m.head(s[-1][b, i]), labels[b, i]) for s in states for b in range(2) for i in range(16)
             if labels[b, i] >= 0]
    assert len(states) == 4 and torch.allclose(loss, torch.stack(terms).mean())


def test_denoise_blanks_exactly_the_ratio_and_scores_only_blanked_patches():
    torch.manual_seed(0)
    m = tiny(objective="denoise", mask_ratio=0.25)
    images = torch.rand(3, 1, 12, 12)
    blanked, mask = m.blank(images, torch.Generator().manual_seed(0))
    assert (mask.sum(1) == 4).all() and (blanked[mask] == 0).all()
    assert torch.equal(blanked[~mask], patchify(images, 3)[~mask])
    total, recon, contrast = m.denoise_loss(images)
    assert total.item() == pytest.approx(recon.item() + 0.1 * contrast.item(), rel=1e-6)
    assert contrast.item() > 0


# ---------------------------------------------------------------- ellipse world
def test_ellipse_world_labels_follow_the_ink():
    g = torch.Generator().manual_seed(0)
    x, y, owner = ellipse_world(40, g, part_noise=0.0)
    assert x.shape == (40, 1, SIZE, SIZE) and y.shape == owner.shape == (40, (SIZE // PATCH) ** 2)
    assert 0 <= x.min() and x.max() <= 1 and y.max() < len(CLASSES)
    assert torch.equal(y >= 0, owner >= 0)
    mass = F.avg_pool2d(x, PATCH).flatten(1) * PATCH * PATCH
    assert (mass[y >= 0] > 2.0 - 1e-4).all()  # a labelled column holds at least min_ink of ink
    assert ((owner == 0).sum(1) > 3).all() and ((owner == 1).sum(1) > 3).all()  # two objects in every image
    for i in range(40):  # each object's columns carry one class
        for o in (0, 1):
            assert y[i][owner[i] == o].unique().numel() == 1
    # fixed by the seed; pixel noise changes the pixels and not the labels
    again = ellipse_world(40, torch.Generator().manual_seed(0), part_noise=0.0)
    noisy = ellipse_world(40, torch.Generator().manual_seed(0), part_noise=0.0, pixel_noise=0.3)
    assert torch.equal(again[0], x) and torch.equal(noisy[1], y) and not torch.equal(noisy[0], x)


def test_poses_cover_their_ranges_and_unseen_ones_lie_outside():
    g = torch.Generator().manual_seed(0)
    centre, angle, scale = poses(2000, g, (-30.0, 30.0), (0.85, 1.15))
    deg = torch.rad2deg(angle)
    assert deg.abs().max() <= 30 and deg.min() < -28 and deg.max() > 28
    assert scale.min() >= 0.85 * UNIT and scale.max() <= 1.15 * UNIT
    quadrant = (centre // (SIZE / 2)).long()
    assert ((quadrant[:, 0] != quadrant[:, 1]).any(-1)).all()  # the two wholes never share a quadrant
    far = torch.rad2deg(poses(2000, g, (30.0, 60.0), (1.2, 1.4))[1]).abs()
    assert far.min() >= 30 and far.max() <= 60


def test_datamodule_splits_differ_and_batches_have_owners():
    dm = EllipseWorldDataModule(train_size=20, val_size=10, test_size=10, batch_size=5)
    dm.setup()
    images, labels, owner = next(iter(dm.train_dataloader()))
    assert images.shape == (5, 1, 48, 48) and labels.shape == owner.shape == (5, 64)
    assert not torch.equal(dm.val_set.x, dm.test_set.x[:10])
    assert torch.equal(dm.generate(10, 2).x, dm.test_set.x)


# ---------------------------------------------------------------- shapes, training, release
def test_bad_settings_say_what_to_do():
    with pytest.raises(ValueError, match="'classify' or 'denoise'"):
        tiny(objective="clasify")
    with pytest.raises(ValueError, match="one value per level"):
        tiny(radii=[1, None])
    with pytest.raises(ValueError, match="contrast_from"):
        tiny(objective="denoise", contrast_from=4)


def test_shapes():
    m = tiny(num_classes=4)
    images = torch.rand(2, 1, 12, 12)
    states = m.settle(images)
    assert len(states) == 4 and all(s.shape == (3, 2, 16, 8) for s in states)
    assert m(images).shape == (2, 16, 4)
    d = tiny(objective="denoise")
    assert d(images).shape == (2, 16, 9)


def test_overfits_one_batch():
    """Eight ellipse-world images: the per-column read-out after T steps learns their labels."""
    torch.manual_seed(0)
    x, y, _ = ellipse_world(8, torch.Generator().manual_seed(0))
    m = GLOMModule(dim=16, hidden=32, freqs=2, radii=[1, 2, None], iterations=2, lr=3e-3)
    opt = m.configure_optimizers()

    def acc():
        with torch.no_grad():
            return (m(x).argmax(-1) == y)[y >= 0].float().mean().item()

    before = acc()
    for _ in range(300):
        loss = m.classify_loss(m.settle(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert acc() > max(0.95, before + 0.5)


def test_release_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    for module in (tiny().eval(), tiny(objective="denoise").eval()):
        back = zoo.load(zoo.save_pretrained(module, tmp_path / module.hparams.objective))
        assert type(back) is GLOMModule and back.state_dict().keys() == module.state_dict().keys()
        for k, v in module.state_dict().items():
            assert torch.equal(v, back.state_dict()[k]), k
        images = torch.rand(2, 1, 12, 12)
        with torch.no_grad():
            assert torch.equal(module(images), back.eval()(images))
