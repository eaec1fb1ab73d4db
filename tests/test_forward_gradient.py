"""Forward gradients (paper 8): the estimators are exact in one dimension, unbiased against the true gradient and
per example; activity perturbation has far lower variance than weight perturbation (the paper's central claim);
the LocalMixer's shapes match Table 2, its replicated local losses are eqs. 4-5 and really local; LG-FG-A fits a
batch; and the module trains through `zoo fit` (DDP too), analyses and round-trips."""
import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import round_trip
from torch.func import jvp

import zoo
from zoo.models.forward_gradient import (LocalMixer, activity_gradient, activity_perturbed_gradient, forward_gradients,
                                         replicated_cross_entropy, true_gradients,
                                         weight_perturbed_gradient)
from zoo.models.forward_gradient.model import layer_norm, layer_norm_vjp


def _true_grad(layer, x, y):
    layer.zero_grad()
    F.cross_entropy(layer(x), y).backward()
    return {"weight": layer.weight.grad.clone(), "bias": layer.bias.grad.clone()}


def _assert_unbiased(samples: torch.Tensor, true: torch.Tensor, teeth: bool = True):
    """samples [n, d] of an estimator of `true` [d]. Each coordinate's error of the mean, in units of its standard
    error (from the samples), z_j = (mean_j − g_j) / se_j, must have mean(z²) < 3 (≈ 1 when unbiased; a mean over
    coordinates, so one heavy-tailed coordinate cannot decide it). teeth: also require enough draws that a 2x-scaled
    or sign-flipped estimator would fail (mean(g²/se²) > 12)."""
    n = samples.shape[0]
    mean = samples.mean(0)
    se2 = samples.var(0) / n
    random = se2 > 0
    assert torch.allclose(mean[~random], true[~random], atol=1e-6)  # deterministic coordinates must be exact
    assert ((mean - true)[random].pow(2) / se2[random]).mean() < 3
    if teeth:
        assert (true[random].pow(2) / se2[random]).mean() > 12


def test_one_dimensional_case_by_hand():
    w = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        w.weight.fill_(3.0)
    g = torch.Generator().manual_seed(0)
    est = weight_perturbed_gradient(w, lambda f: f(torch.ones(1, 1)).pow(2).sum(), generator=g)
    v = torch.randn(1, 1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(est["weight"], 6.0 * v * v)  # dL/dw = 2w = 6; ĝ = (6 v) v


def test_both_estimators_are_unbiased():
    torch.manual_seed(0)
    layer, x, y = torch.nn.Linear(6, 3), torch.randn(16, 6), torch.randint(0, 3, (16,))
    true = _true_grad(layer, x, y)
    g = torch.Generator().manual_seed(1)
    fg_w = [weight_perturbed_gradient(layer, lambda f: F.cross_entropy(f(x), y), g) for _ in range(500)]
    fg_a = [activity_perturbed_gradient(layer, x, lambda z: F.cross_entropy(z, y, reduction="none"), g)
            for _ in range(300)]
    for k in ("weight", "bias"):
        _assert_unbiased(torch.stack([e[k].flatten() for e in fg_w]), true[k].flatten())
        _assert_unbiased(torch.stack([e[k].flatten() for e in fg_a]), true[k].flatten())


def test_activity_perturbation_is_per_example():
    """ĝ_z_i = (∇_z_i L_i · u_i) u_i / B exactly: example i's own direction and loss, untouched by the others."""
    torch.manual_seed(0)
    z, u = torch.randn(6, 4), torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    losses, g_z = activity_gradient(lambda t: F.cross_entropy(t, y, reduction="none"), z, u)
    zz = z.clone().requires_grad_()
    grad_i = torch.autograd.grad(F.cross_entropy(zz, y, reduction="none").sum(), zz)[0]  # row i: ∇_z_i L_i
    assert torch.allclose(g_z, (grad_i * u).sum(1, keepdim=True) * u / 6, atol=1e-6)
    assert torch.allclose(losses, F.cross_entropy(z, y, reduction="none"))
    y2 = y.clone()
    y2[5] = 3  # another label for example 5 changes its row only
    g_z2 = activity_gradient(lambda t: F.cross_entropy(t, y2, reduction="none"), z, u)[1]
    assert torch.equal(g_z2[:5], g_z[:5]) and not torch.allclose(g_z2[5], g_z[5])
    with pytest.raises(ValueError, match="one loss per example"):
        activity_gradient(lambda t: F.cross_entropy(t, y), z, u)


def test_activity_perturbation_has_lower_variance():
    """The paper's central measurement, at a size where it matters: a 200 -> 10 layer on 8 examples perturbs
    2,010 weights (FG-W) but only 10 outputs per example (FG-A); the squared error of one estimate is ~d ||g||^2."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(200, 10)
    x, y = torch.randn(8, 200), torch.randint(0, 10, (8,))
    true = _true_grad(layer, x, y)["weight"]
    g = torch.Generator().manual_seed(2)

    def mse(estimator) -> float:
        return torch.stack([(estimator()["weight"] - true).pow(2).sum() for _ in range(200)]).mean().item()

    w_err = mse(lambda: weight_perturbed_gradient(layer, lambda f: F.cross_entropy(f(x), y), g))
    a_err = mse(lambda: activity_perturbed_gradient(layer, x, lambda z: F.cross_entropy(z, y, reduction="none"), g))
    assert a_err * 50 < w_err


def test_layer_norm_and_its_closed_form_gradient():
    torch.manual_seed(0)
    x, dy = torch.randn(3, 5, 8, requires_grad=True), torch.randn(3, 5, 8)
    y, inv = layer_norm(x)
    ref = F.layer_norm(x, (8,))
    assert torch.allclose(y, ref, atol=1e-5)
    assert torch.allclose(layer_norm_vjp(y, inv, dy), torch.autograd.grad(ref, x, dy)[0], atol=1e-4)
    assert torch.equal(layer_norm(torch.full((2, 49), -0.81))[0], torch.zeros(2, 49))  # blank patch: exact zeros


def _mixer(**kw) -> LocalMixer:
    torch.manual_seed(0)
    net = LocalMixer(**{"image_size": 8, "num_patches": 2, "num_blocks": 2, "channels": 8, "groups": 2, **kw})
    torch.nn.init.normal_(net.readout.weight, std=0.3)  # the zero read-out would give the global loss no gradient
    return net


def _batch(n: int = 6):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 10


@pytest.mark.parametrize("name,blocks,patches,channels,groups,image,inputs,params", [
    ("S/1/1", 1, 1, 256, 1, 28, 1, 271_892), ("M/1/16", 1, 1, 512, 16, 28, 1, 429_076),
    ("M/8/16", 4, 8, 512, 16, 32, 3, 918_770), ("L/8/64", 4, 8, 2048, 64, 32, 3, 13_074_674)])
def test_mixer_sizes_match_table_2(name, blocks, patches, channels, groups, image, inputs, params):
    """Table 2: S/1/1 272K, M/1/16 429K, M/8/16 919K, L/8/64 13.1M parameters."""
    with torch.device("meta"):
        net = LocalMixer(image, inputs, patches, blocks, channels, groups)
    assert sum(p.numel() for p in net.parameters()) == params


def test_mixer_shapes_and_patches():
    net = _mixer()
    x, y = _batch()
    assert net(x).shape == (6, 10)
    patches = net.patchify(x)
    assert patches.shape == (6, 4, 16)
    assert torch.equal(patches[:, 1], x[:, 0, :4, 4:].reshape(6, 16))  # patch 1: top right, row-major pixels
    outs = [out for _, out in net.trunk(x)]
    assert [tuple(o.shape) for o in outs] == [(6, 4, 2, 4)] * 2
    assert [len(b.noise_shapes(6)) for b in net.blocks] == [2, 3]  # the first block has no token mixing
    assert torch.equal(LocalMixer(image_size=28).readout.weight, torch.zeros(10, 64))


def test_replicated_losses_are_eqs_4_and_5():
    """Every copy has the block loss's value; copy (p, g)'s derivative is that of the loss on the pooled features
    with every other patch and group behind a stop-gradient (eqs. 4-5, built literally here)."""
    torch.manual_seed(0)
    B, P, G, C = 3, 4, 2, 3
    feats, dx = torch.randn(B, P, G, C), torch.randn(B, P, G, C)
    head, y = torch.nn.Linear(G * C, 5), torch.tensor([0, 3, 4])
    with torch.no_grad():
        value, d = jvp(lambda f: replicated_cross_entropy(f, head, y), (feats,), (dx,))
        plain = F.cross_entropy(head(feats.mean(1).flatten(1)), y, reduction="none")
        assert torch.allclose(value, plain[:, None, None].expand(B, P, G), atol=1e-6)
        for p in range(P):
            for g in range(G):
                mask = torch.zeros(1, P, G, 1)
                mask[0, p, g] = 1

                def literal(f):
                    kept = mask * f + (1 - mask) * f.detach()  # StopGrad on every other patch and group
                    return F.cross_entropy(head(kept.mean(1).flatten(1)), y, reduction="none")

                assert torch.allclose(d[:, p, g], jvp(literal, (feats,), (dx,))[1], atol=1e-5)
        # summed over the copies, the derivative is the block loss's own
        full = jvp(lambda f: F.cross_entropy(head(f.mean(1).flatten(1)), y, reduction="none"), (feats,), (dx,))[1]
        assert torch.allclose(d.sum((1, 2)), full, atol=1e-5)


def test_local_losses_are_local():
    """With stop-gradients between blocks, block 0's gradient (true or forward) ignores everything after it."""
    x, y = _batch()
    net, other = _mixer(), _mixer()
    with torch.no_grad():
        for p in [*other.blocks[1].parameters(), *other.heads[1].parameters(), *other.readout.parameters()]:
            p.add_(torch.randn_like(p))
    a, b = true_gradients(net, x, y, local=True), true_gradients(other, x, y, local=True)
    for k in a:
        if k.startswith(("blocks.0.", "heads.0.")):
            assert torch.equal(a[k], b[k]), k
    est = [forward_gradients(n, x, y, "activity", True, torch.Generator().manual_seed(0))[0] for n in (net, other)]
    assert all(torch.equal(est[0][k], est[1][k]) for k in est[0] if k.startswith("blocks.0."))
    g_global = true_gradients(net, x, y, local=False), true_gradients(other, x, y, local=False)
    assert not torch.allclose(g_global[0]["blocks.0.fc.weight"], g_global[1]["blocks.0.fc.weight"])  # has teeth
    assert "heads.0.weight" not in g_global[0]  # the BP baseline has no local losses


@pytest.mark.parametrize("perturb,local,draws", [("activity", True, 200), ("activity", False, 100),
                                                 ("weight", True, 100)])
def test_mixer_forward_gradients_are_unbiased(perturb, local, draws):
    """LG-FG-A, FG-A and LG-FG-W each average to the true gradient of their own objective (LG-BP's or BP's); the
    heads and the read-out get their exact gradients. Only LG-FG-A's variance is low enough for `draws` to also
    rule out a 2x-scaled estimator (FG-W itself is checked that way on one layer above)."""
    net, (x, y) = _mixer(), _batch()
    true = true_gradients(net, x, y, local)
    g = torch.Generator().manual_seed(0)
    est = [forward_gradients(net, x, y, perturb, local, g)[0] for _ in range(draws)]
    assert set(est[0]) == set(true)
    names = [k for k in true if k.startswith("blocks.") and not k.endswith("token_bias")]  # zero: LN removes it
    _assert_unbiased(torch.stack([torch.cat([d[k].flatten() for k in names]) for d in est]),
                     torch.cat([true[k].flatten() for k in names]), teeth=local and perturb == "activity")
    for k in true:
        if not k.startswith("blocks."):
            assert torch.allclose(est[0][k], true[k], atol=1e-6), k


def test_lg_fg_a_fits_one_batch(fixture_data):
    """LG-FG-A alone (no backprop anywhere) drives a small LocalMixer to fit 20 real digits."""
    L.seed_everything(0)
    x, y = fixture_data.train_set.__getitems__(list(range(20)))
    x = (x - 0.1) / 0.3
    net = LocalMixer(28, 1, 4, 2, 32, 4)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(200):  # FG-A's noise makes it slower than backprop's local gradients (LG-BP: ~100 steps)
        grads, logs = forward_gradients(net, x, y, "activity", True, g)
        for k, p in net.named_parameters():
            p.grad = grads[k]
        opt.step()
        first = first if first is not None else float(logs["local_loss"])
    assert float(logs["local_loss"]) < 0.2 * first
    with torch.no_grad():
        assert (net(x).argmax(1) == y).float().mean() > 0.9


def test_module_modes_and_analyse(fixture_data, tmp_path):
    """analyse: activity beats weight perturbation, and local losses beat the global one, by orders of magnitude."""
    with pytest.raises(ValueError, match="mode must be"):
        zoo.create("localmixer", mode="feedback_alignment")
    x, y = fixture_data.train_set.__getitems__(list(range(8)))
    bp, _ = zoo.create("localmixer", num_blocks=1, channels=16, groups=4, mode="backprop", local=False).gradients(x, y)
    assert not any(k.startswith("heads.") for k in bp)
    m = zoo.create("localmixer", num_blocks=2, channels=32, groups=4)
    torch.nn.init.normal_(m.net.readout.weight, std=0.3)
    m.variance_batch, m.variance_samples = 8, 8
    out = m.analyse(tmp_path, fixture_data)
    metrics = out["metrics"]
    assert set(metrics) == {f"grad/{s}_{e}" for s in ("relvar", "cos") for e in ("fg_w", "fg_a", "lg_fg_w", "lg_fg_a")}
    assert metrics["grad/relvar_lg_fg_a"] * 10 < min(metrics["grad/relvar_lg_fg_w"], metrics["grad/relvar_fg_a"])
    assert metrics["grad/relvar_fg_a"] < metrics["grad/relvar_fg_w"]
    assert metrics["grad/cos_lg_fg_a"] > 0.1 > metrics["grad/cos_fg_w"]
    (title, table), = out["tables"].items()
    assert "8 draws" in title and table.count("\n") == 5 and "| LG-FG-A (activity" in table
    assert out["figures"]["gradient_variance.png"].stat().st_size > 1000



def test_release_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    m = zoo.create("localmixer", num_blocks=2, channels=16, groups=4, mode="backprop", local=False)
    back = round_trip(m, tmp_path, torch.rand(3, 1, 28, 28))
    assert (back.hparams.mode, back.hparams.local) == ("backprop", False)
