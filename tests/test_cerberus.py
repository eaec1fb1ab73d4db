"""Cerberus: the template, rotations and part meshes by hand, the batched heads against a loop over parts, the losses
by hand, cross-view correspondences by hand and on real renders, which part shows where, overfitting one batch, the
release round trip and the card's pictures."""
import math

import pytest
import torch

import zoo
from bvh_fixture import write_clips
from zoo.data.posed_views import PosedViewsDataModule, camera_rotation
from zoo.models.cerberus import Cerberus, CerberusModule, icosphere, render_parts, rotation_6d
from zoo.models.cerberus.model import PartHeads, correspondence, invariance_loss, iou_loss


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    """The fixture clips (tests/bvh_fixture.py) as 16 x 16 views, 3 cameras per frame."""
    clips = write_clips(tmp_path_factory.mktemp("bvh"))
    dm = PosedViewsDataModule(bvh_dir=str(clips), train_every=3, val_every=6, test_every=2, views=3, size=16, res=20,
                              batch_size=2)
    dm.setup()
    return dm


def tiny(**kw) -> CerberusModule:
    return CerberusModule(**{"parts": 3, "level": 0, "width": 0.125, "hidden": 8, "size": 16, **kw})


@pytest.mark.parametrize("level,counts", [(0, (12, 20)), (1, (42, 80)), (2, (162, 320))])
def test_icosphere_is_a_closed_outward_unit_sphere(level, counts):
    v, f = icosphere(level)
    assert (len(v), len(f)) == counts
    assert torch.allclose(v.norm(dim=1), torch.ones(len(v)))
    directed = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert len(torch.unique(directed, dim=0)) == 3 * len(f)  # each directed edge once: consistent winding
    assert len(torch.unique(directed.sort(1).values, dim=0)) == 3 * len(f) // 2  # each edge in two faces: closed
    t = v[f].double()
    volume = (t[:, 0] * torch.linalg.cross(t[:, 1], t[:, 2])).sum() / 6
    assert 0 < volume < 4 / 3 * math.pi  # outward, inscribed in the unit ball


def test_rotation_6d_by_hand():
    """(2, 0, 0 | 1, 1, 0): a = e1, the second half loses its e1 part, b = e2, c = a x b = e3: the identity. Any
    input gives a proper rotation."""
    assert torch.allclose(rotation_6d(torch.tensor([2.0, 0, 0, 1, 1, 0])), torch.eye(3))
    R = rotation_6d(torch.randn(5, 6))
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand(5, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(5), atol=1e-5)


def test_part_meshes_by_hand():
    """With the heads' last layer zero, a part is its bias: 6-D (0, 1, 0 | −1, 0, 0) is 90° about z, translation
    tanh⁻¹(0.5) in x gives 0.5 extent, scale logits 0 give the middle of [min, max], offsets 0: vertices_k =
    R (s u) + t."""
    net = Cerberus(parts=2, level=0, width=0.125, hidden=4, extent=0.5, min_scale=0.1, max_scale=0.3, init_scale=0.2)
    with torch.no_grad():
        net.heads.b2.zero_()
        net.heads.b2[:, :6] = torch.tensor([0.0, 1, 0, -1, 0, 0])
        net.heads.b2[0, 6] = math.atanh(0.5)
    out = net.eval()(torch.rand(1, 1, 16, 16))
    Rz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    u = net.template
    assert torch.allclose(out.rotation[0, 0], Rz, atol=1e-6) and torch.allclose(out.scale, torch.full((1, 2, 3), 0.2))
    assert torch.allclose(out.shape[0, 0], 0.2 * u)
    assert torch.allclose(out.vertices[0, 0], 0.2 * u @ Rz.T + torch.tensor([0.25, 0, 0]), atol=1e-6)
    assert torch.allclose(out.vertices[0, 1], 0.2 * u @ Rz.T, atol=1e-6)


def test_heads_equal_a_loop_over_parts():
    torch.manual_seed(0)
    heads = PartHeads(3, 5, 4, 7)
    torch.nn.init.normal_(heads.W2)
    h = torch.randn(2, 5)
    out = heads(h)
    for k in range(3):
        z = torch.relu(h @ heads.W1[k] + heads.b1[k])
        assert torch.allclose(out[:, k], z @ heads.W2[k] + heads.b2[k], atol=1e-6)


def test_losses_by_hand():
    """IoU loss: a perfect silhouette gives 0; 0.5 everywhere on 4 pixels with 2 in the mask gives 1 − 1/3. The
    invariance: shapes 0.11 apart in x with extent 0.55 give 0.2² = 0.04. The Laplacian of a constant offset is 0."""
    mask = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert iou_loss(mask, mask).item() == 0
    assert iou_loss(torch.full_like(mask, 0.5), mask).item() == pytest.approx(1 - 1 / 3)
    a = torch.rand(2, 3, 12, 3)
    b = a + torch.tensor([0.11, 0, 0])
    assert invariance_loss(a, b, 0.55).item() == pytest.approx(0.04)
    net = Cerberus(parts=1, level=1, width=0.125, hidden=4)
    assert torch.allclose(net.laplacian @ torch.ones(42, 3), torch.zeros(42, 3), atol=1e-6)


def test_correspondence_by_hand():
    """A flat square at z = 0 seen head-on (a) and turned 180° about the vertical (b): pixel (r, c) of a is pixel
    (r, S − 1 − c) of b. The same view maps every pixel to itself; a nearer surface in b hides the point."""
    S, e = 4, 1.0
    depth = torch.zeros(1, S, S)
    depth[0, :, 0] = -torch.inf  # nothing in the first column
    eye = torch.eye(3)[None]
    turn = torch.tensor([[[-1.0, 0, 0], [0, 1, 0], [0, 0, -1]]])
    mirrored = depth.flip(-1)
    idx = correspondence(depth, mirrored, eye, turn, e)[0].view(S, S)
    r, c = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    expect = torch.where(c > 0, r * S + (S - 1 - c), -1)
    assert torch.equal(idx, expect)
    same = correspondence(depth, depth, eye, eye, e)[0].view(S, S)
    assert torch.equal(same, torch.where(c > 0, r * S + c, -1))
    hidden = mirrored.clone()
    hidden[0, 2, 1] = 2.0  # something nearer than the square at b's pixel (2, 1)
    idx = correspondence(depth, hidden, eye, turn, e)[0].view(S, S)
    assert idx[2, 2] == -1 and idx[2, 1] == 2 * S + 2


def test_views_of_one_frame_see_the_same_body_parts(views):
    """On real renders: the surface points two cameras both see carry the same true body part far more often than
    with the cameras swapped (the depth test and the rotations agree; 0.88 at 32 px on the CMU clips), the first and third images share a camera, and pixels are the data's Lambertian shading."""
    b = views.train_set.__getitems__(list(range(len(views.train_set))))
    assert b["images"].shape[1:] == (3, 16, 16) and torch.equal(b["index"][:, 0, 0], b["index"][:, 1, 0])
    assert torch.equal(b["index"][:, 0, 1], b["index"][:, 2, 1]) and not torch.equal(b["rotation"][:, 0],
                                                                                      b["rotation"][:, 1])
    idx = correspondence(b["depth"][:, 0], b["depth"][:, 1], b["rotation"][:, 0], b["rotation"][:, 1], views.extent)
    pa, pb = b["parts"][:, 0].flatten(1), b["parts"][:, 1].flatten(1)
    seen = idx >= 0
    assert seen.sum() > 20
    same = (pa == pb.gather(1, idx.clamp_min(0)))[seen].float().mean()
    wrong = correspondence(b["depth"][:, 0], b["depth"][:, 1], b["rotation"][:, 1], b["rotation"][:, 0],
                           views.extent)  # the cameras swapped
    swapped = (pa == pb.gather(1, wrong.clamp_min(0)))[wrong >= 0].float().mean()
    assert same > 0.65 and same > swapped + 0.3  # 16 px: a pixel is a limb's width, so boundaries blur
    assert torch.equal(b["mask"], b["parts"] >= 0) and (b["images"][~b["mask"]] == 0).all()
    assert (b["images"][b["mask"]] >= views.ambient - 1 / 255).all()
    front = camera_rotation(torch.tensor([0.0]), torch.tensor([0.0]))[0] @ torch.tensor([0.0, -1, 0], dtype=torch.float64)
    assert torch.allclose(front, torch.tensor([0.0, 0, 1], dtype=torch.float64))  # azimuth 0: facing the camera
    R = camera_rotation(torch.tensor([90.0]), torch.tensor([0.0]))[0]
    assert torch.allclose(R @ torch.tensor([0.0, -1, 0], dtype=torch.float64),
                          torch.tensor([1.0, 0, 0], dtype=torch.float64), atol=1e-12)  # turned 90°: facing right
    with pytest.raises(ValueError, match="at least 2"):
        PosedViewsDataModule(views=1)


def test_rendered_part_probabilities_show_which_part_is_where():
    """Two parts, left and right of the image: each pixel's most probable part is the one drawn there."""
    net = Cerberus(parts=2, level=1, width=0.125, hidden=4, extent=0.5)
    u = net.template
    v = torch.stack([0.15 * u + torch.tensor([-0.25, 0, 0]), 0.15 * u + torch.tensor([0.25, 0, 0])])[None]
    r = render_parts(net, v, torch.tensor([0.0, 0, 1]), 16, 0.25, 1e-4, 3e-3, parts=True)
    assert r.silhouette[0, 8, 4] > 0.9 and r.silhouette[0, 8, 12] > 0.9 and r.silhouette[0, 0, 0] < 0.01
    assert r.part_probs[0, 8, 4].argmax() == 0 and r.part_probs[0, 8, 12].argmax() == 1
    assert r.image[0, 8, 4] == pytest.approx(1.0, abs=0.05)  # facing the light at the sphere's centre


def test_shapes_and_scores(views):
    torch.manual_seed(0)
    m = tiny().eval()
    b = views.test_set.__getitems__([0, 1])
    out = m(b["images"][:, 0, None])
    assert out.vertices.shape == (2, 3, 12, 3) and out.rotation.shape == (2, 3, 3, 3)
    s = m.scores_of(b)
    for k in ("sil_iou", "novel_view_iou", "novel_view_iou_copy", "view_agreement", "view_agreement_chance"):
        assert s[k].shape == (2,) and ((0 <= s[k]) & (s[k] <= 1)).all(), k
    terms = m.losses(b)
    assert set(terms) == {"sil", "image", "lap", "view", "art", "total"} and torch.isfinite(terms["total"])


def test_overfits_one_batch(views):
    torch.manual_seed(0)
    m = tiny(parts=4, lr=3e-3, w_view=0.0, w_art=0.0)
    b = views.train_set.__getitems__([0, 1])
    opt = m.configure_optimizers()
    first = m.losses(b)["sil"].item()
    for _ in range(150):
        loss = m.losses(b)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m.losses(b)["sil"].item() < min(0.3, first - 0.3)


def test_invariance_pulls_paired_shapes_together(views):
    """From the same start, 30 steps with the invariances at weight 10 leave the paired part shapes much closer than
    30 steps without them."""
    b = views.train_set.__getitems__([0, 1])
    last = {}
    for w in (10.0, 0.0):
        torch.manual_seed(0)
        m = tiny(w_view=w, w_art=w, lr=1e-3)
        with torch.no_grad():
            torch.nn.init.normal_(m.net.heads.W2, std=0.3)
        opt = m.configure_optimizers()
        for _ in range(30):
            loss = m.losses(b)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        last[w] = m.losses(b)
    assert last[10.0]["view"] < 0.5 * last[0.0]["view"] and last[10.0]["art"] < 0.5 * last[0.0]["art"]


def test_release_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    module = tiny().eval()
    back = zoo.load(zoo.save_pretrained(module, tmp_path / "cerberus"))
    assert type(back) is CerberusModule and back.state_dict().keys() == module.state_dict().keys()
    for k, v in module.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(module(x).vertices, back.eval()(x).vertices)


def test_analysis_draws_the_pictures(views, tmp_path):
    out = tiny().analyse(tmp_path / "card", views)
    assert out["figures"]["derendering.png"].is_file() and len(out["tables"]) == 1
    assert set(out["metrics"]) == {"parts/nmi", "parts/nmi_kmeans"}
    assert all(0 <= v <= 1 for v in out["metrics"].values())


def test_kmeans_of_pixels_finds_two_blobs():
    """Two separated groups of valid points in one image, and an image with one valid point: each group gets one
    label, invalid points −1."""
    from zoo.models.cerberus.analysis import kmeans_pixels

    pts = torch.tensor([[[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [9.0, 9.0]]], dtype=torch.float64)
    valid = torch.tensor([[True, True, True, True, True, False]])
    lab = kmeans_pixels(pts.repeat(2, 1, 1), torch.cat([valid, torch.tensor([[True] + [False] * 5])]), 2)
    assert lab[0, 0] == lab[0, 1] == lab[0, 2] != lab[0, 3] == lab[0, 4] and lab[0, 5] == -1
    assert (lab[1, 1:] == -1).all() and lab[1, 0] >= 0
