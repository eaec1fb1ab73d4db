"""Deep Lambertian Networks: every Gibbs conditional against the Gaussian posterior written out by hand (explicit
3 x 3 inverses, moments of many draws), photometric stereo on exact renders, the derived and Yale B data in their
layouts, one-shot scoring by hand, overfitting one batch and the release round trip."""
import math

import numpy as np
import pytest
import torch

import zoo
from zoo.data.lambertian import LambertianObjectsDataModule, photometric_stereo, tilt
from zoo.models.deep_lambertian import DeepLambertianModule, DeepLambertianNetwork, Latents, render
from zoo.models.deep_lambertian.analysis import one_shot
from zoo.models.deep_lambertian.module import angle_deg


def net(pixels: int = 5, noise_std: float = 0.1) -> DeepLambertianNetwork:
    """A small network in float64 with uneven prior variances and standardisation, so that no term cancels."""
    torch.manual_seed(0)
    d = DeepLambertianNetwork(pixels, 3, 4, noise_std=noise_std, light_std=1.5).double()
    with torch.no_grad():
        for p in (d.albedo_prior, d.normal_prior):
            p.log_var.copy_(torch.randn_like(p.log_var) * 0.3)
            p.mu.copy_(torch.randn_like(p.mu) * 0.2)
        d.albedo_mean.copy_(torch.rand(pixels) * 0.5 + 0.2)
        d.albedo_std.copy_(torch.rand(pixels) * 0.3 + 0.1)
        d.normal_mean.copy_(torch.randn(3 * pixels) * 0.3)
        d.normal_std.copy_(torch.rand(3 * pixels) * 0.4 + 0.2)
    return d


def lit_state(d: DeepLambertianNetwork, B: int = 2):
    """Images, albedo, normals every pixel of which faces the light, a light and hidden states."""
    P = d.pixels
    ell = torch.randn(B, 3, dtype=torch.float64)
    n = torch.randn(B, P, 3, dtype=torch.float64)
    n = n * torch.sign(torch.einsum("bpc,bc->bp", n, ell))[..., None]
    a = torch.rand(B, P, dtype=torch.float64) + 0.5
    v = torch.rand(B, P, dtype=torch.float64)
    h = torch.bernoulli(torch.full((B, 3), 0.5, dtype=torch.float64))
    g = torch.bernoulli(torch.full((B, 4), 0.5, dtype=torch.float64))
    return v, a, n, ell, h, g


def test_albedo_conditional_is_the_product_of_prior_and_likelihood():
    """p(a_i | v, N, ℓ, h) ∝ N(a_i; m_i, σ_i²) N(v_i; a_i s_i, σ_v²), s_i = max(0, n_iᵀℓ): checked by quadrature on
    a grid, shadowed pixels (s_i = 0, the prior alone) included, and by the moments of 40,000 draws."""
    d = net()
    v, a, n, ell, h, _ = lit_state(d)
    n[0, 1] = -n[0, 1]  # pixel 1 of image 0 in attached shadow
    mean = d.sample_albedo(v, n, ell, h, False, None)
    m, var = d.prior_given_hidden("albedo", h)
    s = render(torch.ones_like(v), n, ell)
    assert s[0, 1] == 0
    grid = torch.linspace(-4, 5, 200001, dtype=torch.float64)
    for b in range(2):
        for i in range(d.pixels):
            log_p = -0.5 * (grid - m[b, i]) ** 2 / var[i] - 0.5 * (v[b, i] - grid * s[b, i]) ** 2 / d.noise_std ** 2
            w = torch.softmax(log_p, 0)
            assert torch.isclose(mean[b, i], (w * grid).sum(), atol=1e-6)
    R = 40000  # draws, as one batch of R copies
    draws = d.sample_albedo(v.repeat(R, 1), n.repeat(R, 1, 1), ell.repeat(R, 1), h.repeat(R, 1), True,
                            torch.Generator().manual_seed(0)).view(R, 2, -1)
    post_var = 1 / (1 / var + s ** 2 / d.noise_std ** 2)
    assert torch.allclose(draws.mean(0), mean, atol=4 * post_var.sqrt().max().item() / 200)
    assert torch.allclose(draws.var(0), post_var, rtol=0.05)


def test_normal_conditional_is_the_three_by_three_gaussian_posterior():
    """Per observed pixel, precision D⁻¹ + a² ℓℓᵀ/σ_v² and mean Λ⁻¹ (D⁻¹ m + a v ℓ / σ_v²), by explicit inverses;
    the rank-one square root draws have that covariance; with shadows masked, a dark pixel draws from its prior."""
    d = net()
    d.shadow = 0.05
    v, a, n, ell, _, g = lit_state(d)
    v[1, 2] = 0.0
    mean = d.sample_normal(v, a, n, ell, g, False, None)
    m, D = d.prior_given_hidden("normal", g)
    m, D = m.view(2, d.pixels, 3), D.view(d.pixels, 3)
    R = 20000
    draws = d.sample_normal(v.repeat(R, 1), a.repeat(R, 1), n.repeat(R, 1, 1), ell.repeat(R, 1), g.repeat(R, 1), True,
                            torch.Generator().manual_seed(0)).view(R, 2, d.pixels, 3)
    for b in range(2):
        for i in range(d.pixels):
            lit = float(v[b, i] > 0.05)
            u = lit * a[b, i] * ell[b] / d.noise_std
            cov = torch.linalg.inv(torch.diag(1 / D[i]) + torch.outer(u, u))
            mu = cov @ (m[b, i] / D[i] + lit * a[b, i] * v[b, i] / d.noise_std ** 2 * ell[b])
            assert torch.allclose(mean[b, i], mu, atol=1e-12)
            emp = torch.cov(draws[:, b, i].T)
            assert (emp - cov).abs().max() < 0.04 * cov.abs().max()
    assert torch.allclose(mean[1, 2], m[1, 2])  # in shadow: the prior's mean
    d.shadow = None  # every pixel observed (the default): the dark pixel counts too
    assert not torch.allclose(d.sample_normal(v, a, n, ell, g, False, None)[1, 2], m[1, 2])


def test_light_conditional_is_bayesian_least_squares():
    """ℓ | v, a, N ~ N(Λ⁻¹ Xᵀv/σ_v², Λ⁻¹), Λ = XᵀX/σ_v² + I/σ_ℓ², X = rows a_i n_iᵀ of the observed pixels."""
    d = net(pixels=7)
    d.shadow = 0.05
    v, a, n, ell, _, _ = lit_state(d)
    v[0, :3] = 0.0
    mean = d.sample_light(v, a, n, ell, False, None)
    R = 20000
    draws = d.sample_light(v.repeat(R, 1), a.repeat(R, 1), n.repeat(R, 1, 1), ell.repeat(R, 1), True,
                           torch.Generator().manual_seed(0)).view(R, 2, 3)
    for b in range(2):
        lit = (v[b] > 0.05).double()
        X = (lit * a[b])[:, None] * n[b]
        prec = X.T @ X / d.noise_std ** 2 + torch.eye(3, dtype=torch.float64) / d.light_std ** 2
        assert torch.allclose(mean[b], torch.linalg.solve(prec, X.T @ v[b] / d.noise_std ** 2), atol=1e-12)
        cov = torch.linalg.inv(prec)
        assert (torch.cov(draws[:, b].T) - cov).abs().max() < 0.04 * cov.abs().max()


def test_light_is_recovered_given_true_albedo_and_normals():
    """With the true albedo and normals clamped, the light's posterior mean is the true light to within noise."""
    torch.manual_seed(1)
    d = net(pixels=64, noise_std=0.01)
    n = torch.nn.functional.normalize(torch.randn(3, 64, 3, dtype=torch.float64) + torch.tensor([0, 0, 2.0]), dim=-1)
    a = torch.rand(3, 64, dtype=torch.float64) + 0.3
    ell = torch.nn.functional.normalize(torch.randn(3, 3, dtype=torch.float64) + torch.tensor([0, 0, 2.0]), dim=-1)
    n = n * torch.sign(torch.einsum("bpc,bc->bp", n, ell))[..., None]  # every pixel lit: the linear model is exact
    v = render(a, n, ell) + 0.01 * torch.randn(3, 64, dtype=torch.float64)
    got = d.sample_light(v, a, n, ell, False, None)
    assert (angle_deg(got, ell) < 2).all() and torch.allclose(got.norm(dim=-1), torch.ones(3, dtype=torch.float64),
                                                             atol=0.02)


def test_log_likelihood_is_the_gaussian_image_model():
    """log p(v | a, N, ℓ) = Σ_i log N(v_i; a_i max(0, n_iᵀℓ), σ_v²) over observed pixels, against torch.distributions."""
    d = net(pixels=6)
    v, a, n, ell, _, _ = lit_state(d)
    n[0, 2] = -n[0, 2]  # attached shadow: the mean there is 0
    z = (a, n, ell)
    mean = a * torch.einsum("bpc,bc->bp", n, ell).clamp_min(0)
    ref = torch.distributions.Normal(mean, d.noise_std).log_prob(v).sum(1)
    assert torch.allclose(d.log_likelihood(v, Latents(*z)), ref)
    d.shadow = 0.3  # dark pixels unobserved: their terms drop out
    keep = v > 0.3
    assert torch.allclose(d.log_likelihood(v, Latents(*z)), (torch.distributions.Normal(mean, d.noise_std)
                                                             .log_prob(v) * keep).sum(1))


def test_photometric_stereo_inverts_exact_lambertian_images():
    """Random albedo and normals under 6 lights, shadows cut at 0: exact wherever at least three lights see a pixel,
    0 where fewer do."""
    torch.manual_seed(0)
    n = torch.nn.functional.normalize(torch.randn(2, 4, 5, 3) + torch.tensor([0, 0, 1.5]), dim=-1)
    a = torch.rand(2, 4, 5) + 0.2
    az = torch.tensor([-50.0, -20.0, 0.0, 20.0, 50.0, 10.0])
    el = torch.tensor([-30.0, 20.0, 0.0, -10.0, 30.0, 45.0])
    from zoo.data.yaleb import light_direction

    light = light_direction(az, el).expand(2, -1, -1)
    images = render(a[:, None].flatten(2), n[:, None].flatten(2, 3), light).view(2, 6, 4, 5)
    alb, nrm = photometric_stereo(images, light, shadow=1e-6)
    seen = (images > 1e-6).sum(1) >= 3
    assert seen.float().mean() > 0.8
    assert torch.allclose(alb[seen], a[seen], atol=1e-4) and (angle_deg(nrm, n)[seen] < 0.05).all()
    assert (alb[~seen] == 0).all()


def test_inference_shapes_and_modes():
    d = net(pixels=6)
    v = torch.rand(4, 6, dtype=torch.float64)
    z = d.infer(v, steps=5, burn_in=2, generator=torch.Generator().manual_seed(0))
    assert z.albedo.shape == (4, 6) and z.normal.shape == (4, 6, 3) and z.light.shape == (4, 3)
    first, second = d.infer(v, 4, 1, sample=False), d.infer(v, 4, 1, sample=False)
    assert all(torch.equal(x, y) for x, y in zip(first, second))  # conditional modes: deterministic
    clamped = d.infer(v, 3, 0, light=torch.ones(4, 3, dtype=torch.float64))
    assert torch.equal(clamped.light, torch.ones(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="burn_in"):
        d.infer(v, 3, 3)


def test_one_shot_scoring_by_hand():
    """Three identities under three lights, gallery light 0: identity 2's probes look like identity 0's gallery."""
    f = torch.tensor([[[1.0, 0, 0], [0.9, 0.1, 0], [1, 0.2, 0]],
                      [[0, 1.0, 0], [0.1, 1, 0], [0, 1, 0.1]],
                      [[0, 0, 1.0], [1, 0, 0.1], [0.1, 0, 1]]])
    assert math.isclose(one_shot(f, 0), 5 / 6)
    assert math.isclose(one_shot(f, 2), 5 / 6)  # identity 2's light-1 probe is nearest identity 0's gallery again
    assert one_shot(torch.eye(3)[:, None].expand(3, 4, 3), 1) == 1.0


def test_lit_objects_are_exact_renders_with_disjoint_textures(tmp_path):
    from mesh_fixture import write_meshes

    from zoo.data.meshes import normalise, read_mesh
    from zoo.data.render import lambertian, rasterise

    mesh_dir = write_meshes(tmp_path / "meshes")
    dm = LambertianObjectsDataModule(str(mesh_dir), size=12, azimuths=[-30.0, 0.0, 30.0], elevations=[-20.0, 20.0],
                                     meshes=None, train_poses=2, val_poses=1, test_poses=1, min_cover=0.05)
    dm.setup()
    assert len(dm.train_set) >= 8 and len(dm.val_set) >= 4 and len(dm.test_set) >= 4
    x, light, ident, albedo, normal = dm.test_set.__getitems__([0, 1])
    assert x.shape == (2, 6, 12, 12) and light.shape == (2, 6, 3) and normal.shape == (2, 12, 12, 3)
    redo = lambertian(albedo[0].double(), normal[0].double(), light[0].double())
    assert (x[0].double() - redo).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit quantisation only
    mask = normal.norm(dim=-1) > 0
    assert ((albedo >= 0.2 - 1e-6) | ~mask).all() and (albedo[~mask] == 0).all()
    textures = {s: {n.split("texture ")[1] for n, k in zip(dm.names, dm.split_codes) if k == i}
                for i, s in enumerate(("train", "val", "test"))}
    assert not (textures["train"] & textures["test"]) and not (textures["train"] & textures["val"])
    again = LambertianObjectsDataModule(str(mesh_dir), size=12, azimuths=[-30.0, 0.0, 30.0],
                                        elevations=[-20.0, 20.0], meshes=None, train_poses=2, val_poses=1,
                                        test_poses=1, min_cover=0.05)
    again.setup()
    assert torch.equal(again.test_set.x, dm.test_set.x)  # cached, and the same
    upright = rasterise(normalise(read_mesh(mesh_dir / "cube.off"), 0.9), 12, 1.0, tilt(0, 0))
    turned = rasterise(normalise(read_mesh(mesh_dir / "cube.off"), 0.9), 12, 1.0, tilt(0, 45))
    assert upright.mask.sum() < turned.mask.sum()  # a cube face-on covers less than one turned by 45 degrees
    with pytest.raises(FileNotFoundError, match="no mesh files"):
        LambertianObjectsDataModule(str(tmp_path / "none")).setup()


def test_yale_b_subjects_share_lights_and_hold_out_people(tmp_path):
    from yaleb_fixture import write_pgm

    from zoo.data.yaleb import YaleBSubjectsDataModule

    root = tmp_path / "CroppedYale"
    lights = [(0, 0), (-20, 10), (25, -10), (40, 30), (-60, 0)]
    for subject in range(1, 7):
        for j, (a, e) in enumerate(lights[:5 if subject != 3 else 4]):
            img = np.full((14, 10), 20 * j + subject, np.uint8)
            write_pgm(root / f"yaleB{subject:02d}" / f"yaleB{subject:02d}_P00A{a:+04d}E{e:+03d}.pgm", img)
    dm = YaleBSubjectsDataModule(str(tmp_path), size=4, val_subjects=1, test_subjects=2)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (3, 1, 2)
    x, light, subject, albedo, normal = dm.test_set.__getitems__([0, 1])
    assert x.shape == (2, 4, 4, 4) and light.shape == (2, 4, 3)  # subject 3 lacks the fifth light: 4 shared
    assert torch.isnan(albedo).all() and torch.isnan(normal).all()
    every = torch.cat([dm.train_set.more[0], dm.val_set.more[0], dm.test_set.more[0]])
    assert sorted(every.tolist()) == [1, 2, 3, 4, 5, 6]
    # rows hold the shared lights sorted by (azimuth, elevation): (-20, 10), (0, 0), (25, -10), (40, 30)
    assert torch.allclose(x[0, :, 0, 0] * 255, torch.tensor([20.0, 0.0, 40.0, 60.0]) + subject[0], atol=1e-3)


def tiny_module(**kw) -> DeepLambertianModule:
    return DeepLambertianModule(**{**dict(image_size=8, hidden_albedo=16, hidden_normal=16, infer_steps=4,
                                          burn_in=1, probes=2), **kw})


def lit_batch(B: int = 6, size: int = 8, L: int = 5, seed: int = 0):
    """Spheres' caps of random radius with random smooth albedo under five lights (exact renders)."""
    g = torch.Generator().manual_seed(seed)
    t = (torch.arange(size) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(-t, t, indexing="ij")
    r = 0.6 + 0.35 * torch.rand(B, 1, 1, generator=g)
    inside = (x ** 2 + y ** 2 < r ** 2)
    z = (r ** 2 - x ** 2 - y ** 2).clamp_min(0).sqrt()
    normal = torch.stack([x.expand_as(z), y.expand_as(z), z], -1) / r[..., None] * inside[..., None]
    coarse = torch.rand(B, 1, 2, 2, generator=g)  # smooth albedo: a 2 x 2 pattern blown up
    albedo = (0.3 + 0.7 * torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear"))[:, 0] * inside
    from zoo.data.yaleb import light_direction

    light = light_direction(torch.tensor([-40.0, -15, 0, 15, 40])[:L], torch.tensor([10.0, -20, 0, 20, -10])[:L])
    light = light.expand(B, -1, -1).contiguous()
    images = render(albedo.flatten(1)[:, None], normal.flatten(1, 2)[:, None], light).view(B, L, size, size)
    return images, light, torch.arange(B), albedo, normal


def test_overfits_one_batch():
    """Six lit spheres: CD-10 on the priors raises the exact log-likelihood of the batch's photometric-stereo albedo and
    normals, and the light estimator's error falls to a fraction of where it starts. (The recipe's fixed unit
    variances cannot concentrate on six examples, so here the variances are learned and the chains restart at the
    data, plain CD.)"""
    torch.manual_seed(0)
    m = tiny_module(lr=1e-2, learn_var=True, persistent=False)
    batch = lit_batch()
    a, n = photometric_stereo(batch[0], batch[1])
    m.net.set_standardisation(a.flatten(1), n.flatten(1))
    opt = m.configure_optimizers()

    def errors():
        with torch.no_grad():
            xa = (a.flatten(1) - m.net.albedo_mean) / m.net.albedo_std
            xn = (n.flatten(1) - m.net.normal_mean) / m.net.normal_std
            light = (m.net.estimate_light(batch[0].flatten(2)) - batch[1]).pow(2).sum(-1).mean()
            # exact mean log-likelihood of the batch under each prior (2^16 hidden states enumerated)
            ll = [-(p.free_energy(x) + p.log_partition()).mean() for p, x in ((m.net.albedo_prior, xa),
                                                                             (m.net.normal_prior, xn))]
            return (*ll, light)

    before = errors()
    for step in range(150):
        opt.zero_grad()
        m.training_step(batch, step).backward()
        opt.step()
    after = errors()  # measured: the two log-likelihoods rise by 2.4 and 80 nats, the light error falls to 0.014
    assert after[0] + after[1] > before[0] + before[1] + 40 and after[2] < 0.05 * before[2], (before, after)


def test_evaluation_scores_and_copy_baseline():
    """A network whose inference returned the truth would relight exactly; the copy baseline is the mean squared
    difference between an identity's images, computed here by hand."""
    m = tiny_module()
    batch = lit_batch(B=2)
    out = m.single_image(batch, 0, torch.tensor([0, 2]))
    images = batch[0].flatten(2)
    copy = torch.stack([torch.stack([(images[b, p] - images[b, j]).pow(2).mean() for j in range(5) if j != p]).mean()
                        for b in range(2) for p in (0, 2)])
    assert torch.allclose(out["relight_mse_copy"], copy, atol=1e-7)
    assert out["relight_mse"].shape == (4,) and out["normal_deg"].shape == (4,) and "albedo_mse" in out


def test_release_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    module = tiny_module().eval()
    module.net.set_standardisation(torch.rand(5, 64), torch.rand(5, 192))
    back = zoo.load(zoo.save_pretrained(module, tmp_path / "dln"))
    assert type(back) is DeepLambertianModule and back.state_dict().keys() == module.state_dict().keys()
    for k, v in module.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    x = torch.rand(2, 8, 8)
    z1, z2 = module(x, torch.Generator().manual_seed(3)), back.eval()(x, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(z1, z2))


def test_analysis_scores_one_shot_and_draws_the_figure(tmp_path):
    from mesh_fixture import write_meshes

    dm = LambertianObjectsDataModule(str(write_meshes(tmp_path / "meshes")), size=8, azimuths=[-30.0, 0.0, 30.0],
                                     elevations=[0.0], meshes=None, train_poses=2, val_poses=1, test_poses=1,
                                     min_cover=0.05)
    out = tiny_module().analyse(tmp_path / "card", dm)
    assert set(out["metrics"]) == {"oneshot/pixels", "oneshot/albedo", "oneshot/albedo_normals",
                                   "normals/inferred_deg", "normals/mean_shape_deg"}
    assert all(0 <= out["metrics"][k] <= 1 for k in ("oneshot/pixels", "oneshot/albedo"))
    assert out["figures"]["inference.png"].is_file() and len(out["tables"]) == 2
