"""Canonical Capsules: ACN, pooling, Procrustes, the losses and the decoders against brute force, the symmetries
the architecture promises (permutation equivariance, rotation invariance of a trained frame's inputs), the data
readers, overfitting one batch, the official-checkpoint conversion and the release round trip."""
import math

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.models.canonical_capsules import (ACNeEncoder, CanonicalCapsulesModule, CapsuleDecoders, chamfer_loss,
                                           procrustes, random_poses)
from zoo.models.canonical_capsules.analysis import histogram, matched_kmeans, normalised_keypoints, pca_canonical
from zoo.models.canonical_capsules.model import ACN, Capsules, localisation, equilibrium, pool

TINY = dict(K=4, C=32, depth=2, n_points=32, bottleneck=32, grid_dim=3)


def tiny(d: int = 2, **kw) -> CanonicalCapsulesModule:
    return CanonicalCapsulesModule(d=d, **{**TINY, **kw})


def test_acn_equals_the_official_formula_on_a_k_by_n_tensor():
    """Σ_k a_k (x − μ_k) / sqrt(Σ_n ā_kn (x_n − μ_k)² + ε), computed as the official code does (a [B, C, K, N]
    tensor), against our four batched products; also where the mass clamp acts (a branch with almost no mass)."""
    torch.manual_seed(0)
    acn = ACN(6, 3).double()
    with torch.no_grad():
        acn.attention.bias[2] = -30.0  # branch 2 gets almost no mass: the 1e-3 clamp acts
    x = torch.randn(2, 6, 9, dtype=torch.float64) * 3 + 1
    a = torch.softmax(acn.attention(x), 1)[:, None]  # B1KN
    a_norm = a / a.sum(-1, keepdim=True).clamp_min(1e-3)
    xx = x[:, :, None]
    mean = (xx * a_norm).sum(-1, keepdim=True)
    std = torch.sqrt((a_norm * (xx - mean) ** 2).sum(-1, keepdim=True) + 1e-3)
    ref = ((xx - mean) / std * a).sum(2)
    assert a.sum(-1)[0, 0, 2] < 1e-3
    assert torch.allclose(acn(x), ref, atol=1e-10)


def test_pooling_gives_attention_weighted_keypoints_and_descriptors():
    A = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]]])  # [1, K=2, N=3]
    p = torch.tensor([[[0.0, 2.0, 4.0], [1.0, 1.0, 5.0]]])  # [1, d=2, N]
    mu = pool(A, p)
    assert torch.allclose(mu, torch.tensor([[[1.0, 3.5], [1.0, 4.0]]]))
    # a capsule with mass under 1e-3 is divided by 1e-3, not by its mass
    tiny_mass = torch.tensor([[[1e-4, 0.0, 0.0]]])
    assert torch.allclose(pool(tiny_mass, p[:, :1]), torch.tensor([[[0.0]]]))
    assert torch.allclose(pool(tiny_mass, torch.ones(1, 1, 3)), torch.tensor([[[0.1]]]))


def test_localisation_and_equilibrium_by_brute_force():
    torch.manual_seed(1)
    A = torch.softmax(torch.randn(3, 4, 7), 1)
    p = torch.randn(3, 2, 7)
    caps = Capsules(A, pool(A, p), torch.zeros(3, 5, 4))
    w = A / A.sum(-1, keepdim=True)
    ref = sum(((p[b] - caps.mu[b, :, k:k + 1]) ** 2).sum(0).mul(w[b, k]).sum() for b in range(3) for k in range(4)) / 3
    assert localisation(caps, p).item() == pytest.approx(ref.item(), rel=1e-5)
    mass = A.sum(-1)
    ref_eq = sum(((m - m.mean()) ** 2).sum() / 3 for m in mass) / 3
    assert equilibrium(caps).item() == pytest.approx(ref_eq.item(), rel=1e-5)


@pytest.mark.parametrize("d", [2, 3])
def test_procrustes_recovers_a_rigid_pose_and_never_reflects(d):
    torch.manual_seed(d)
    R, t = random_poses(5, d)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(d).expand(5, d, d), atol=1e-6)
    assert torch.allclose(torch.linalg.det(R), torch.ones(5), atol=1e-6)
    s = torch.randn(5, d, 10)
    R_hat, t_hat = procrustes(s, R @ s + t)
    assert torch.allclose(R_hat, R, atol=1e-5) and torch.allclose(t_hat, t, atol=1e-5)
    # a mirrored target: the best proper rotation, never a reflection
    mirror = torch.eye(d)
    mirror[0, 0] = -1
    R_m, _ = procrustes(s, mirror @ s)
    assert torch.allclose(torch.linalg.det(R_m), torch.ones(5), atol=1e-5)


def test_random_3d_rotations_are_uniform():
    """Uniform rotations on SO(3) have angles with density (1 − cos θ)/π: mean π/2 + 2/π = 126.5° (the official
    sampler's are biased small, mean 95°)."""
    R, _ = random_poses(20000, 3, generator=torch.Generator().manual_seed(0))
    angle = torch.arccos(((R.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1))
    assert math.degrees(angle.mean().item()) == pytest.approx(math.degrees(math.pi / 2 + 2 / math.pi), abs=1.0)
    theta = torch.atan2(*random_poses(20000, 2, generator=torch.Generator().manual_seed(0))[0][:, [1, 0], 0].T)
    assert theta.mean().abs() < 0.05 and theta.std() == pytest.approx(math.pi / math.sqrt(3), rel=0.02)


def test_chamfer_loss_by_brute_force():
    torch.manual_seed(2)
    x, y = torch.randn(2, 5, 3), torch.randn(2, 7, 3)
    sq = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    ref = sq.min(2).values.mean() + sq.min(1).values.mean()
    assert chamfer_loss(x, y).item() == pytest.approx(ref.item(), rel=1e-5)
    each = sq.min(2).values.mean(1) + sq.min(1).values.mean(1)
    assert torch.allclose(chamfer_loss(x, y, per_cloud=True), each, rtol=1e-5)
    assert chamfer_loss(x, x).item() == pytest.approx(0.0, abs=1e-5)


def test_grouped_decoders_equal_one_decoder_per_capsule():
    """Capsule k's points come from its own MLP (its slices of the grouped weights, its batch-norm channels) on
    [grid_k, β_k], tanh, plus μ_k."""
    torch.manual_seed(3)
    K, C, d, M = 3, 5, 2, 4
    dec = CapsuleDecoders(d, C, K, K * M, bottleneck=16, grid_dim=2)
    mu, beta = torch.randn(2, d, K), torch.randn(2, C, K)
    out = dec(mu, beta, split=True)  # training-mode batch norm: statistics per capsule and channel
    for k in range(K):
        h = torch.cat([dec.grid[k].expand(2, -1, -1), beta[:, :, k:k + 1].expand(-1, -1, M)], 1)
        for layer, norm in zip(dec.layers, dec.norms):
            co, ci = layer.weight.shape[0] // K, layer.weight.shape[1]
            w, b = layer.weight[k * co:(k + 1) * co], layer.bias[k * co:(k + 1) * co]
            h = F.conv1d(h, w, b)
            h = F.relu(F.batch_norm(h, None, None, norm.weight[k * co:(k + 1) * co], norm.bias[k * co:(k + 1) * co],
                                    training=True))
        co = dec.out.weight.shape[0] // K
        y = torch.tanh(F.conv1d(h, dec.out.weight[k * co:(k + 1) * co], dec.out.bias[k * co:(k + 1) * co]))
        assert torch.allclose(out[:, k], (y + mu[:, :, k:k + 1]).transpose(1, 2), atol=1e-5)
    assert dec(mu, beta).shape == (2, K * M, d)


def test_capsules_are_permutation_equivariant_and_see_shape_not_order():
    """Shuffling the points shuffles the attention and leaves keypoints and descriptors unchanged (eval mode)."""
    torch.manual_seed(4)
    enc = ACNeEncoder(3, 16, 4, 2).eval()
    p = torch.randn(2, 3, 20)
    perm = torch.randperm(20)
    a, b = enc(p), enc(p[:, :, perm])
    assert torch.allclose(a.A[:, :, perm], b.A, atol=1e-5)
    assert torch.allclose(a.mu, b.mu, atol=1e-5) and torch.allclose(a.beta, b.beta, atol=1e-4)


def test_losses_vanish_where_they_should():
    """Equivariance is 0 for keypoints that move with the cloud: the relative pose p_b = R_b R_aᵀ (p_a − t_a) + t_b
    is checked by computing the loss's own formula on exactly transformed keypoints."""
    torch.manual_seed(5)
    (Ra, Rb), (ta, tb) = zip(*[random_poses(2, 3) for _ in range(2)])
    mu = torch.randn(2, 3, 4)
    mu_a, mu_b = Ra @ mu + ta, Rb @ mu + tb
    R_ab = Rb @ Ra.transpose(1, 2)
    assert (R_ab @ (mu_a - ta) + tb - mu_b).abs().max() < 1e-5


@pytest.mark.parametrize("d", [2, 3])
def test_shapes_and_losses(d):
    torch.manual_seed(6)
    m = tiny(d)
    x = torch.rand(4, 24, d)
    loss = m.net.losses(x)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in loss)
    assert loss.total.item() == pytest.approx(
        (5 * loss.equivariance + loss.localisation + 1e-3 * loss.equilibrium + loss.invariance + loss.canonical
         + loss.reconstruction).item(), rel=1e-5)
    m.eval()
    y, x_can = m(x)
    assert y.shape == (4, 32, d) and x_can.shape == (4, 24, d)
    can, caps = m.capsules(x)
    assert caps.A.shape == (4, 4, 24) and caps.mu.shape == (4, d, 4) and caps.beta.shape == (4, 32, 4)
    # the canonical cloud is a rigid motion of the input
    assert torch.allclose(torch.cdist(can, can), torch.cdist(x, x), atol=1e-4)


def test_bad_clouds_get_clear_errors():
    m = tiny(3).eval()
    with pytest.raises(ValueError, match="empty point cloud"):
        m(torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match=r"\[batch, points, 3\].*2-D cloud for a 3-D model"):
        m.net.losses(torch.zeros(2, 10, 2))


def test_canonical_frame_keypoints_are_pose_free_for_an_exact_canonicaliser():
    """The canonical pose (R, t) maps the keypoints onto 𝒦's keypoints; if μ moves rigidly and k̄ does not (an
    invariant descriptor), R μ + t lands on the same points for every pose: what the canonical loss trains."""
    torch.manual_seed(7)
    k_bar = torch.randn(1, 3, 5)
    k_bar = k_bar - k_bar.mean(-1, keepdim=True)
    R, t = random_poses(6, 3)
    mu = R @ k_bar.expand(6, -1, -1) + t
    R_can, t_can = procrustes(mu, k_bar.expand(6, -1, -1))
    assert torch.allclose(R_can @ mu + t_can, k_bar.expand(6, -1, -1), atol=1e-5)


def test_analysis_baselines_by_hand():
    # PCA canonicalisation is invariant to rotating and moving the same points, and gives a proper rotation
    torch.manual_seed(8)
    x = torch.randn(2, 50, 3) * torch.tensor([3.0, 1.0, 0.3])
    x = x + torch.randn(2, 50, 3).pow(2) * 0.3  # skew, so the signs are defined
    R, t = random_poses(2, 3)
    assert torch.allclose(pca_canonical(x), pca_canonical((R @ x.transpose(1, 2) + t).transpose(1, 2)), atol=1e-4)
    # histogram: fractions in a bins^d grid over [-e, e]^d
    h = histogram(torch.tensor([[[-1.0, -1.0], [0.9, 0.9], [0.9, 0.95]]]), bins=2, extent=1.0)
    assert torch.allclose(h, torch.tensor([[1 / 3, 0, 0, 2 / 3]]))
    k = normalised_keypoints(torch.tensor([[[0.0, 2.0, 4.0], [1.0, 1.0, 2.0]]]))
    assert torch.allclose(k, torch.tensor([[[-0.5, -0.125], [0.0, -0.125], [0.5, 0.125]]]))
    # matched K-means on three well-separated clusters whose labels are a permutation of the cluster ids
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = torch.arange(3).repeat(20)
    f = centres[y] + 0.1 * torch.randn(60, 2, generator=g)
    assert matched_kmeans(f, (y + 1) % 3, f, (y + 1) % 3, 3) == 1.0


def test_image_point_clouds_follow_the_ink():
    from zoo.data.point_clouds import image_points

    img = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    img[0, 0, 5, 20] = 255  # one lit pixel: every point inside it, centred on it
    p = image_points(img, 50, torch.Generator().manual_seed(0))
    assert p.shape == (1, 50, 2) and p.abs().max() <= 1 / 28 + 1e-6
    img[0, 0, 20, 5] = 255  # two: the right one above (y up), the left one below
    p = image_points(img, 400, torch.Generator().manual_seed(0))
    right = p[0, :, 0] > 0
    assert 0.4 < right.float().mean() < 0.6 and (p[0, right, 1] > 0).all() and (p[0, ~right, 1] < 0).all()
    with pytest.raises(ValueError, match="no lit pixel"):
        image_points(torch.zeros(1, 1, 28, 28), 4)


def test_datamodules_read_real_formats(tmp_path):
    pytest.importorskip("h5py")
    from mesh_fixture import write_meshes
    from shapenet_h5_fixture import write_shapenet_h5

    mesh_dir = write_meshes(tmp_path / "meshes")
    from zoo.data.point_clouds import (ImagePointCloudDataModule, MeshPointCloudDataModule,
                                       ShapeNetPointCloudDataModule)

    dm = ImagePointCloudDataModule("mnist-5k", points=40, val_size=100, test_size=200, batch_size=8)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4700, 100, 200)
    x, y = dm.test_set.__getitems__([0, 1])
    assert x.shape == (2, 40, 2) and torch.equal(x, dm.test_set.__getitems__([0, 1])[0])  # evaluation is fixed
    # the official h5 layout: {train,valid}_cat.txt and pcd/point/<i>
    write_shapenet_h5(tmp_path)
    sn = ShapeNetPointCloudDataModule(str(tmp_path), points=30, val_size=2)
    sn.setup()
    assert (len(sn.train_set), len(sn.val_set), len(sn.test_set)) == (10, 2, 4)
    x, y = sn.test_set.__getitems__([0, 3])
    assert x.shape == (2, 30, 3) and y.tolist() == [0, 1] and (x[1] >= 1).all()
    one = ShapeNetPointCloudDataModule(str(tmp_path), category=1, points=30, val_size=1)
    one.setup()
    assert set(one.test_set.labels.tolist()) == {1}
    with pytest.raises(ValueError, match="category 5"):
        ShapeNetPointCloudDataModule(str(tmp_path), category=5, val_size=1).setup()
    with pytest.raises(FileNotFoundError, match="train_cat.txt"):
        ShapeNetPointCloudDataModule(str(tmp_path / "nothing")).setup()
    # meshes: open ones are fine for surface samples
    mm = MeshPointCloudDataModule(data_dir=str(mesh_dir), points=64, cached_points=128)
    mm.setup()
    assert len(mm.names) == 5 and mm.test_set.__getitems__([0])[0].shape == (1, 64, 3)
    assert mm.train_set.__getitems__([0])[0].abs().max() <= 1.0 + 1e-5


def test_overfits_one_batch():
    """Eight digits: the reconstruction error in the canonical frame falls to a fraction of where it starts."""
    from zoo.data.point_clouds import ImagePointCloudDataModule

    torch.manual_seed(0)
    dm = ImagePointCloudDataModule("mnist-5k", points=48, val_size=100, test_size=100)
    dm.setup()
    x = dm.val_set.__getitems__(list(range(8)))[0]
    m = tiny(2, K=4, C=32, n_points=48, bottleneck=64)
    opt = torch.optim.Adam(m.parameters(), 3e-3)

    def error():
        m.eval()
        with torch.no_grad():
            y, x_can = m(x)
            return chamfer_loss(x_can, y).item()

    before = error()
    for _ in range(60):  # at 1 thread: 0.48 of the start after 25 steps, 0.17 after 50, 0.14 after 150
        m.train()
        loss = m.net.losses(x, generator=torch.Generator().manual_seed(1)).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert error() < 0.4 * before


def test_non_finite_gradients_skip_the_step():
    m = tiny(2)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    next(m.parameters()).grad[..., 0] = float("nan")
    m.log = lambda *a, **k: None
    m.on_after_backward()
    assert all(p.grad is None for p in m.parameters()) and m.skipped_steps == 1


def test_release_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    module = tiny(3).eval()
    back = zoo.load(zoo.save_pretrained(module, tmp_path / "cc"))
    assert type(back) is CanonicalCapsulesModule and back.state_dict().keys() == module.state_dict().keys()
    for k, v in module.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    x = torch.rand(2, 24, 3)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(module(x), back.eval()(x)))


def official_state(module: CanonicalCapsulesModule) -> dict[str, torch.Tensor]:
    """Our weights under the official AcneAe's names and shapes (the inverse of the converter), plus what the
    official file also holds: the aligner's unused decoder and the main encoder's unused attention head."""
    import re

    out = {}
    K, depth = module.hparams.K, module.hparams.depth

    def layer(rest: str) -> str:
        rest = re.sub(r"^blocks\.(\d+)\.pass_through\.", r"layers.layer-\1.pass_through.layer.", rest)
        rest = re.sub(r"^blocks\.(\d+)\.layers\.(\d+)\.", r"layers.layer-\1.conv_layers.conv-\2.layer.", rest)
        rest = rest.replace("cn.attention.", "cn.conv.").replace("head.", f"layers.vote-{depth - 1}.conv_att.")
        return rest

    for k, v in module.state_dict().items():
        v = v.clone()
        if k.startswith(("net.canonicaliser.encoder.", "net.encoder.")):
            prefix = "model.aligner.encoder." if "canonicaliser" in k else "model.encoder."
            rest = layer(k.split("encoder.", 1)[1])
            out[prefix + rest] = v[..., None] if v.ndim == 3 else v
        elif k.startswith("net.canonicaliser.keypoints."):
            out["model.aligner.ref_kp_net.layer." + k.rsplit("keypoints.", 1)[1]] = v
        elif k == "net.decoder.grid":
            out["model.decoder.grid"] = v.transpose(1, 2)[None]
        else:
            _, _, kind, *rest = k.split(".")
            official = "conv4" if kind == "out" else f"{'conv' if kind == 'layers' else 'bn'}{int(rest[0]) + 1}"
            param = rest[-1]
            for c, chunk in enumerate([v] * K if v.ndim == 0 else v.chunk(K)):
                out[f"model.decoder.decoder.{c}.{official}.{param}"] = chunk.clone()
    out["model.aligner.decoder.grid"] = torch.rand(1, K, 3, 3)
    out[f"model.encoder.layers.vote-{depth - 1}.conv_att.weight"] = torch.rand(K, 32, 1, 1)
    return {k.removeprefix("model."): v for k, v in out.items()}


def test_official_checkpoint_converts_strictly_and_nothing_else_is_unpickled(tmp_path):
    """A file in the official `Network._save` format converts to exactly our weights; a variable left over or
    missing stops the conversion with its name; a file that needs anything but tensors to unpickle is refused
    (the converter proven against the official model itself: tests/canonical_capsules_official_parity.py)."""
    import argparse

    from zoo._convert import convert_state, read_torch_checkpoint
    from zoo._errors import ConversionError

    torch.manual_seed(0)
    module = tiny(3)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(), m.num_batches_tracked.fill_(5)
    f = tmp_path / "checkpoint.pth"
    state = official_state(module)
    torch.save({"iter_idx": 5, "model": state, "optimizer": {"state": {0: {"step": torch.tensor(5.0)}},
                                                              "param_groups": [{"lr": 1e-3, "params": [0]}]}}, f)
    fresh = tiny(3)
    fresh.load_state_dict(convert_state("canonical_capsules", read_torch_checkpoint(f), fresh, "t"), strict=True)
    for k, v in module.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k
    bad = dict(state, **{"aligner.extra.weight": torch.zeros(1)})
    bad.pop("decoder.decoder.2.conv1.bias")
    torch.save({"model": bad}, f)
    with pytest.raises(ConversionError, match=r"(?s)model\.aligner\.extra\.weight.*decoder\.2\.conv1\.bias"):
        convert_state("canonical_capsules", read_torch_checkpoint(f), tiny(3), "t")
    torch.save({"model": state, "config": argparse.Namespace(indim=3)}, f)
    with pytest.raises(ConversionError, match="refused"):
        read_torch_checkpoint(f)


@pytest.mark.skipif(not __import__("os").environ.get("ZOO_CANONICAL_CAPSULES_CHECKOUT"),
                    reason="set ZOO_CANONICAL_CAPSULES_CHECKOUT to a checkout of canonical-capsules/canonical-capsules")
def test_converted_weights_match_the_official_model():
    import os
    from pathlib import Path

    from canonical_capsules_official_parity import parity

    for indim in (2, 3):
        diffs = parity(Path(os.environ["ZOO_CANONICAL_CAPSULES_CHECKOUT"]), indim, 128)
        assert diffs.pop("training loss (relative)") < 1e-5 and max(diffs.values()) < 1e-4, diffs


def test_zoo_convert_makes_a_release_from_an_official_file(tmp_path, zoo_home):
    """`zoo convert NAME --checkpoint FILE` on a file in the official format at the entry's size: the release loads
    to the same weights and records the file's sha256; without --checkpoint it says where to download from."""
    import json

    from zoo._convert import convert
    from zoo._errors import CheckpointNotAvailable
    from zoo._hub import sha256_file

    name = "canonical-capsules-shapenet-airplane"
    torch.manual_seed(0)
    module = zoo.create("canonical_capsules", **zoo.info(name).init_args)
    f = tmp_path / "airplane.pth"
    torch.save({"iter_idx": 1, "model": official_state(module)}, f)
    folder = convert(name, f, tmp_path / "release")
    back = zoo.load(folder)
    for k, v in module.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["files_sha256"] == {"airplane.pth": sha256_file(f)}
    assert provenance["framework"].startswith("pytorch")
    with pytest.raises(CheckpointNotAvailable, match="--checkpoint FILE"):
        convert(name)
