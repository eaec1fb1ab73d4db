"""Forward-Forward math against hand-derived values, shapes, locality, and overfitting one batch."""
import math

import lightning as L
import pytest
import torch

from zoo.models.forward_forward import ForwardForward
from zoo.models.forward_forward.model import (FFNet, PeerNorm, _ReLUFullGrad, ff_loss, goodness, length_normalise,
                                              overlay_label, overlay_neutral)


def test_overlay_label_writes_one_hot_into_first_pixels():
    x = torch.full((2, 6), 0.5)
    out = overlay_label(x, torch.tensor([2, 0]), num_classes=3)
    assert out.tolist() == [[0, 0, 1, 0.5, 0.5, 0.5], [1, 0, 0, 0.5, 0.5, 0.5]]
    assert x.eq(0.5).all()  # the input is not modified in place


def test_neutral_label_is_uniform():
    out = overlay_neutral(torch.zeros(1, 5), num_classes=4)
    assert out.tolist() == [[0.25, 0.25, 0.25, 0.25, 0.0]]


def test_length_normalise_divides_by_root_mean_square():
    z = torch.tensor([[3.0, 4.0]])  # mean square 12.5
    out = length_normalise(z, eps=0.0)
    assert torch.allclose(out, torch.tensor([[3 / math.sqrt(12.5), 4 / math.sqrt(12.5)]]))
    assert torch.allclose(length_normalise(7 * z), out)  # only the direction survives


def test_goodness_is_sum_of_squares():
    assert goodness(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 2.0]])).tolist() == [14.0, 4.0]


def test_ff_loss_hand_values():
    theta = 5.0
    # at the threshold both halves have p = 1/2: loss log 2
    assert ff_loss(torch.tensor([5.0]), torch.tensor([5.0]), theta).item() == pytest.approx(math.log(2))
    # G+ = θ+1, G- = θ-2: mean of log(1+e^-1) and log(1+e^-2)
    want = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-2))) / 2
    assert ff_loss(torch.tensor([6.0]), torch.tensor([3.0]), theta).item() == pytest.approx(want, rel=1e-6)


def test_relu_full_grad_forward_is_relu_backward_is_identity():
    z = torch.tensor([-1.0, 2.0], requires_grad=True)
    out = _ReLUFullGrad.apply(z)
    assert out.tolist() == [0.0, 2.0]
    out.sum().backward()
    assert z.grad.tolist() == [1.0, 1.0]


def test_no_gradient_flows_between_layers():
    torch.manual_seed(0)
    net = FFNet(8, [6, 5])
    hs = net(torch.randn(4, 8))
    goodness(hs[1]).sum().backward()  # the second layer's objective only
    assert net.layers[0].weight.grad is None
    assert net.layers[1].weight.grad.abs().sum() > 0


def test_label_goodness_matches_one_pass_per_label():
    torch.manual_seed(0)
    net = FFNet(12, [7, 7, 7]).eval()
    x = torch.rand(3, 12)
    batched = net.label_goodness(x, num_classes=4)
    for c in range(4):
        hs = net(overlay_label(x, torch.full((3,), c), 4))
        assert torch.allclose(batched[:, c], goodness(hs[1]) + goodness(hs[2]), atol=1e-5)  # all but the first


def test_peer_norm_injects_the_matlab_gradient():
    """Forward is the identity; backward adds λ·(m_j − m̄)/B to dL/dh of every example (descent sign of the
    Matlab code's dC/dh += λ·(m̄ − m_j), divided by the batch size like the goodness gradient)."""
    lam, B = 0.03, 2
    p = PeerNorm(3, strength=lam, momentum=0.5)
    p.running_mean.copy_(torch.tensor([2.0, 0.0, 0.0]))
    h = torch.tensor([[2.0, 0.0, 1.0], [2.0, 4.0, 1.0]], requires_grad=True)
    out = p(h)
    assert torch.equal(out, h)
    # running mean = 0.5*[2, 0, 0] + 0.5*[2, 2, 1] = [2, 1, 0.5]; layer mean m̄ = 7/6
    assert p.running_mean.tolist() == [2.0, 1.0, 0.5]
    out.pow(2).sum().backward()
    m, mbar = torch.tensor([2.0, 1.0, 0.5]), 7 / 6
    want = 2 * h.detach() + lam * (m - mbar) / B
    assert torch.allclose(h.grad, want, atol=1e-7)
    # the unit below its peers gets pushed up (negative loss gradient), the busiest one down
    assert (h.grad - 2 * h.detach())[0].tolist() == pytest.approx([lam * 5 / 12, -lam / 12, -lam / 3], abs=1e-6)


def test_peer_norm_is_off_in_eval_and_at_zero_strength():
    h = torch.ones(4, 3, requires_grad=True)
    for p in (PeerNorm(3, strength=0.0), PeerNorm(3, strength=0.03).eval()):
        p(h * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
        assert p.running_mean.abs().sum() == 0
    assert torch.equal(h.grad, 2 * torch.tensor([1.0, 2.0, 3.0]).expand(4, 3))


def test_peer_norm_gradient_reaches_the_weights_of_a_layer_step():
    """Through a whole training step's objective: with λ > 0 the first layer's bias gradient differs from
    λ = 0 by exactly λ·(m_j − m̄) (the sum over the batch of λ·(m_j − m̄)/B), the Matlab code's bias term."""
    torch.manual_seed(0)
    x, y = torch.rand(16, 64), torch.randint(0, 10, (16,))
    grads, means = [], []
    for lam in (0.0, 0.5):
        torch.manual_seed(1)
        m = ForwardForward(in_features=64, hidden=[12, 12], num_classes=10, peer_norm=lam).train()
        m.log = lambda *a, **k: None
        loss, _ = m.local_losses(x, y)
        loss.backward()
        grads.append(m.net.layers[0].bias.grad.clone())
        means.append(m.peer[0].running_mean.clone())
    mean = means[1]
    assert torch.allclose(grads[1] - grads[0], 0.5 * (mean - mean.mean()), atol=1e-6)


def test_forward_shapes_and_classifiers():
    m = ForwardForward(in_features=64, hidden=[20, 30, 40], num_classes=10).eval()
    x = torch.rand(5, 1, 8, 8)
    assert m(x).shape == (5, 10)
    assert m.linear_logits(x).shape == (5, 10)
    assert m.classifier.in_features == 70  # all but the first hidden layer


def test_uniform_negative_labels_are_wrong_and_reproducible():
    m = ForwardForward(in_features=64, hidden=[8], num_classes=10, seed=3, negatives="uniform")
    y = torch.arange(10).repeat(50)
    logits = torch.randn(500, 10)
    a, b = m._negative_labels(y, logits), m._negative_labels(y, logits)
    assert (a != y).all() and torch.equal(a, b)
    assert len(set(a.tolist())) == 10


def test_hard_negative_labels_follow_the_masked_prediction():
    """Hard negatives (the default): never the true label, the same draw for the same (seed, step), and
    label frequencies that match the predicted distribution with the true label removed (chi-square)."""
    m = ForwardForward(in_features=64, hidden=[8], num_classes=4, seed=3)
    assert m.hparams.negatives == "hard"
    n = 20000
    y = torch.tensor([0, 2]).repeat(n // 2)
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.6, 0.1]]).repeat(n // 2, 1)
    a, b = m._negative_labels(y, probs.log()), m._negative_labels(y, probs.log())
    assert torch.equal(a, b) and (a != y).all()
    for true, p in ((0, probs[0]), (2, probs[1])):
        drawn = a[y == true]
        want = p.clone()
        want[true] = 0
        expected = want / want.sum() * len(drawn)
        counts = torch.bincount(drawn, minlength=4).float()
        keep = expected > 0
        chi2 = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
        assert chi2 < 13.8  # 2 degrees of freedom: exceeded with probability 0.001
    skewed = torch.tensor([[0.0, 0.0, 9.0, 0.0]]).repeat(1000, 1)  # label 2 is the confusable one
    assert (m._negative_labels(torch.zeros(1000, dtype=torch.long), skewed) == 2).float().mean() > 0.99


def test_negatives_option_is_checked():
    with pytest.raises(ValueError, match="negatives"):
        ForwardForward(in_features=64, hidden=[8], negatives="random")


def test_overfits_one_batch():
    """One fixed batch of real digits, 150 Lightning steps (fresh negative labels each step): both test-time
    classifiers get every example right."""
    from torch.utils.data import DataLoader, TensorDataset

    from zoo.data import DigitsDataModule

    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    L.seed_everything(0)
    m = ForwardForward(in_features=64, hidden=[200, 200], num_classes=10, lr=0.01, peer_norm=0.0, cooldown=False)
    trainer = L.Trainer(max_epochs=150, enable_progress_bar=False, enable_model_summary=False, logger=False,
                        enable_checkpointing=False)
    trainer.fit(m, DataLoader(TensorDataset(x, y), batch_size=32))
    m.eval()
    with torch.no_grad():
        assert (m(x).argmax(1) == y).float().mean() == 1.0
        assert (m.linear_logits(x).argmax(1) == y).float().mean() == 1.0


def test_label_template_figure(tmp_path, monkeypatch):
    """The supervised card's first-layer figure draws T_c = Σ_j w_jc · w_j, label pixels blank."""
    import zoo._plots

    m = ForwardForward(in_features=16, hidden=[2], num_classes=2)
    w = torch.tensor([[1.0, 0.0, *[2.0] * 14], [0.5, 1.0, *[-1.0] * 14]])
    with torch.no_grad():
        m.net.layers[0].weight.copy_(w)
    drawn = []
    monkeypatch.setattr(zoo._plots, "_save", lambda fig, path, title: drawn.append(fig) or path)
    assert m._label_templates(tmp_path / "t.png", ["a", "b"]) == tmp_path / "t.png"
    images = [np.ma.getdata(ax.images[0].get_array()) for ax in drawn[0].axes if ax.images]
    # label a: 1·w_0 + 0.5·w_1 -> image pixels 2 - 0.5 = 1.5; label b: 0·w_0 + 1·w_1 -> -1
    assert np.allclose(images[0].ravel()[2:], 1.5) and np.allclose(images[1].ravel()[2:], -1.0)
    assert np.isnan(images[0].ravel()[:2]).all()


def test_goodness_is_float32_under_bf16_autocast():
    """bf16 cannot resolve G ≈ θ ≈ N for thousands of units (its spacing near 2000 is 16): goodness and the
    length normalisation run in float32 under autocast. (Trained on digits for 20 epochs, bf16-mixed then
    reaches the float32 run's validation accuracy; before this it stayed below chance.)"""
    torch.manual_seed(0)
    net = FFNet(784, [2000]).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = net(torch.rand(8, 784))[0]
        g = goodness(h)
        z = length_normalise(h)
    assert h.dtype == torch.bfloat16 and g.dtype == torch.float32
    assert torch.equal(g, h.float().pow(2).sum(-1))  # accumulated in float32, not rounded to bf16 steps
    assert z.dtype == torch.bfloat16
    assert torch.allclose(z.float().pow(2).mean(-1), torch.ones(8), atol=2e-2)


# ==================================================================== the rest of the paper: §3.2 and local fields
import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from conftest import round_trip, zoo_in_process  # noqa: E402

import zoo  # noqa: E402
from image_fixture import write_cifar_bin  # noqa: E402

from zoo.data import CIFAR10DataModule, read_cifar_bin  # noqa: E402
from zoo.models.forward_forward import ForwardForwardLocalRF, ForwardForwardUnsupervised  # noqa: E402
from zoo.models.forward_forward.model import (LocalFFNet, blur, blur_matrix, hybrid_images,  # noqa: E402
                                              hybrid_masks, readout)
from zoo.nn.local import LocallyConnected2d  # noqa: E402


def _conv_blur(m: torch.Tensor, passes: int) -> torch.Tensor:
    """Reference: `passes` explicit 3x3 convolutions with the [1/4, 1/2, 1/4] outer product, edges replicated."""
    f = torch.tensor([0.25, 0.5, 0.25], dtype=m.dtype)
    k = torch.outer(f, f).view(1, 1, 3, 3)
    for _ in range(passes):
        m = F.conv2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), k)
    return m


def test_blur_hand_values():
    row = torch.tensor([[[[1.0, 0.0, 0.0]]]])  # one row: the vertical pass sees replicated copies of it
    assert blur(row, 1).flatten().tolist() == [0.75, 0.25, 0.0]  # 1/4·1 (replicated edge) + 1/2·1, 1/4·1
    assert blur(row, 2).flatten().tolist() == [10 / 16, 5 / 16, 1 / 16]
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[0, 0, 2, 2] = 1.0
    out = blur(impulse, 1)[0, 0]
    want = torch.zeros(5, 5)
    want[1:4, 1:4] = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    assert torch.allclose(out, want)
    assert blur_matrix(6, 3).sum(1).allclose(torch.ones(6))  # replicated edges: a constant image stays constant


def test_blur_equals_repeated_convolution():
    bits = (torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    for passes in (1, 6):
        assert torch.allclose(blur(bits, passes), _conv_blur(bits, passes), atol=1e-12)


def test_hybrid_masks_are_binary_large_regions_and_seeded():
    a = hybrid_masks(64, (28, 28), 6, torch.Generator().manual_seed(1))
    b = hybrid_masks(64, (28, 28), 6, torch.Generator().manual_seed(1))
    c = hybrid_masks(64, (28, 28), 6, torch.Generator().manual_seed(2))
    assert a.shape == (64, 1, 28, 28) and set(a.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.3 < a.mean() < 0.7
    same_as_right = (a[..., 1:] == a[..., :-1]).float().mean()  # random bits: 0.5
    assert same_as_right > 0.85


def test_hybrid_images_mix_two_different_images_through_the_mask():
    x = torch.stack([torch.full((3, 2, 2), 1.0), torch.full((3, 2, 2), 2.0), torch.full((3, 2, 2), 3.0)])
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).expand(3, 1, 2, 2)
    out = hybrid_images(x, m, shift=1)  # x' of image i is image i-1 (roll by one)
    assert out[0, 0].tolist() == [[1.0, 3.0], [3.0, 1.0]]
    assert out[1, 2].tolist() == [[2.0, 1.0], [1.0, 2.0]]
    assert torch.equal(out[:, 0], out[:, 1])  # the mask is shared by the channels


def _explicit_local_dense(layer: LocallyConnected2d) -> torch.Tensor:
    """The layer's connection matrix [out_units, in_units] written unit by unit with loops (test reference)."""
    (h, w), (ho, wo), k, s, p = layer.in_size, layer.out_size, layer.kernel_size, layer.stride, layer.padding
    dense = torch.zeros(layer.out_features, layer.in_features, dtype=layer.weight.dtype)
    for o in range(layer.out_channels):
        for i in range(ho):
            for j in range(wo):
                for c in range(layer.in_channels):
                    for u in range(k):
                        for v in range(k):
                            r, q = i * s + u - p, j * s + v - p
                            if 0 <= r < h and 0 <= q < w:
                                dense[o * ho * wo + i * wo + j, c * h * w + r * w + q] = layer.weight[i, j, o, c, u, v]
    return dense


@pytest.mark.parametrize("impl", ["dense", "unfold"])
def test_locally_connected_matches_explicit_masked_dense_layer(impl):
    torch.manual_seed(0)
    layer = LocallyConnected2d(2, 3, (7, 6), kernel_size=3, stride=2, padding=1, impl=impl).double()
    x = torch.randn(4, 2, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        want = x.flatten(1) @ _explicit_local_dense(layer).T + layer.bias.flatten()
    assert layer(x).shape == (4, 3, 4, 3)
    assert torch.allclose(layer(x).flatten(1), want)
    assert torch.allclose(layer.dense_weight().T, _explicit_local_dense(layer))


def test_locally_connected_hand_values_and_no_weight_sharing():
    layer = LocallyConnected2d(1, 1, 3, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.weight[1, 1] = 2.0  # only the centre unit's filter changes
    x = torch.arange(9.0).view(1, 1, 3, 3)
    out = layer(x)[0, 0]
    assert out[0, 0] == 0 + 1 + 3 + 4  # corner: a 3x3 box sum with zero padding
    assert out[1, 1] == 2 * x.sum() and out[0, 1] == 0 + 1 + 2 + 3 + 4 + 5


def test_locally_connected_routes_agree_in_value_and_gradient():
    torch.manual_seed(0)
    a = LocallyConnected2d(3, 2, 10, kernel_size=5, padding=2, impl="dense")
    b = LocallyConnected2d(3, 2, 10, kernel_size=5, padding=2, impl="unfold")
    b.load_state_dict(a.state_dict())
    x1 = torch.randn(5, 3, 10, 10, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    a(x1).pow(2).sum().backward()
    b(x2).pow(2).sum().backward()
    assert torch.allclose(a.weight.grad, b.weight.grad, atol=1e-4)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-4)
    assert LocallyConnected2d(3, 3, 32, 11, padding=5).impl == "dense"  # CIFAR-size: 9.4 M entries
    assert LocallyConnected2d(3, 3, 96, 11, padding=5, impl="auto").impl == "unfold"


def test_local_ff_net_shapes_and_locality():
    torch.manual_seed(0)
    net = LocalFFNet(1, 8, [2, 3], kernel_size=3)
    hs = net(torch.rand(4, 64))
    assert [h.shape for h in hs] == [(4, 128), (4, 192)]
    goodness(hs[1]).sum().backward()
    assert net.layers[0].weight.grad is None and net.layers[1].weight.grad.abs().sum() > 0


def test_readout_joins_the_last_layers_normalised():
    hs = [torch.full((2, 3), 5.0), torch.full((2, 2), 2.0), torch.tensor([[3.0, 4.0], [0.0, 1.0]])]
    out = readout(hs, last=2)
    assert out.shape == (2, 4) and torch.allclose(out[:, :2], torch.ones(2, 2))
    assert torch.allclose(out[:, 2:], length_normalise(hs[2]))


def _small_unsupervised(**kw):
    return ForwardForwardUnsupervised(image_size=8, hidden=[40, 40, 40, 40], **kw)


def _small_local(**kw):
    return ForwardForwardLocalRF(image_size=8, channels=[2, 2, 2, 2], kernel_size=3, **kw)


def test_unsupervised_shapes_negatives_and_locality():
    from types import SimpleNamespace

    torch.manual_seed(0)
    m = _small_local(peer_norm=0.0)  # peer normalisation updates running means: each call would differ
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    assert m(x).shape == (6, 10) and m.classifier.in_features == 3 * 2 * 64  # the last three layers
    neg, masks, shift = m.negatives(x)
    assert 0 < shift < 6 and torch.equal(neg, hybrid_images(x, masks, shift))
    assert torch.equal(m.negatives(x)[0], neg)  # a function of (seed, rank, step)
    m._trainer = SimpleNamespace(global_step=1, global_rank=0)
    assert not torch.equal(m.negatives(x)[0], neg)
    m._trainer = None
    # the read-out's cross-entropy never reaches the layers: their gradient is that of the layer losses alone
    total, _ = m.local_losses(x, y)
    total.backward()
    got = [p.grad.clone() for p in m.net.parameters()]
    m.zero_grad()
    m.layer_losses(m.net(torch.cat([x, neg]).flatten(1)), 6)[0].backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(got, m.net.parameters()))
    assert m.classifier.weight.grad is None
    with pytest.raises(ValueError, match="readout_layers"):
        _small_unsupervised(readout_layers=5)


@pytest.mark.parametrize("make", [_small_unsupervised, _small_local], ids=["fully-connected", "local"])
def test_unsupervised_overfits_one_batch(make):
    """One fixed batch of real 8x8 digits (one blur pass: more would leave masks of one colour at this size),
    400 steps with fresh hybrids each step: the read-out classifies every image, and the layers tell the
    images from new hybrids of them (chance: 0.5)."""
    from torch.utils.data import DataLoader, TensorDataset

    from zoo.data import DigitsDataModule

    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    L.seed_everything(0)
    m = make(lr=0.01, classifier_lr=0.1, blur_passes=1, peer_norm=0.0, cooldown=False)
    trainer = L.Trainer(max_epochs=400, enable_progress_bar=False, enable_model_summary=False, logger=False,
                        enable_checkpointing=False)
    trainer.fit(m, DataLoader(TensorDataset(x, y), batch_size=32))
    m.eval()
    with torch.no_grad():
        assert (m(x).argmax(1) == y).float().mean() == 1.0
        neg = hybrid_images(x, hybrid_masks(32, (8, 8), 1, torch.Generator().manual_seed(5)), 3)
        ranked = torch.stack([(goodness(h_pos) > goodness(h_neg)).float().mean()
                              for h_pos, h_neg in zip(m.net(x.flatten(1)), m.net(neg.flatten(1)))])
    assert ranked[0] > 0.85 and ranked.mean() > 0.75, ranked


def test_locally_connected_backprop_twin():
    torch.manual_seed(0)
    m = zoo.create("locally_connected", image_size=8, channels=[2, 2], kernel_size=3)
    ff = _small_local()
    assert m(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    twin_layers = [p.shape for n, p in m.net.body.named_parameters()]
    assert twin_layers == [p.shape for p in ff.net.layers[:2].parameters()]  # the same locally connected layers


def test_release_round_trips_are_bit_exact(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(5, 1, 8, 8)
    for i, module in enumerate([_small_unsupervised(), _small_local(),
                                zoo.create("locally_connected", image_size=8, channels=[2, 2], kernel_size=3)]):
        round_trip(module, tmp_path / str(i), x)


def test_analyse_on_fixture_data(fixture_data, tmp_path):
    torch.manual_seed(0)
    m = ForwardForwardLocalRF(channels=[1, 1, 1], kernel_size=5, analysis_train_size=100, analysis_epochs=2)
    out = m.analyse(tmp_path, fixture_data)
    metrics = out["metrics"]
    want = {"test/acc_readout_last", "test/acc_readout_all", "test/acc_readout_last_untrained",
            *(f"test/{k}_layer{i}" for k in ("real_vs_hybrid", "real_above_hybrid", "acc_readout", "dead_units")
              for i in (1, 2, 3))}
    assert set(metrics) == want and all(0.0 <= v <= 1.0 for v in metrics.values())
    # the same network untrained is this one (seeded alike, not trained): the same read-out accuracy
    assert metrics["test/acc_readout_last_untrained"] == metrics["test/acc_readout_last"]
    x, _ = fixture_data.test_set.__getitems__(list(range(40)))
    g = torch.Generator().manual_seed(0)
    masks = hybrid_masks(40, (28, 28), 6, g)
    neg = hybrid_images(x, masks, int(torch.randint(1, 40, (1,), generator=g)))
    with torch.no_grad():
        ranked = (goodness(m.net(x.flatten(1))[0]) > goodness(m.net(neg.flatten(1))[0])).float().mean()
    assert metrics["test/real_above_hybrid_layer1"] == pytest.approx(float(ranked))
    # dead units: never active on any real test image
    x_all, _ = fixture_data.test_set.__getitems__(list(range(len(fixture_data.test_set))))
    with torch.no_grad():
        hs = m.net(x_all.flatten(1))
    for i, h in enumerate(hs):
        assert metrics[f"test/dead_units_layer{i + 1}"] == pytest.approx(float((h.amax(0) == 0).float().mean()))
    assert len(out["tables"]) == 2 and "the paper's read-out" in "".join(out["tables"].values())
    figures = {**out["figures"], **m.release_figures(tmp_path, fixture_data)}
    assert set(figures) == {"goodness_real_vs_hybrid.png", "receptive_fields.png", "hybrid_negatives.png"}
    assert all(p.is_file() and p.stat().st_size > 1000 for p in figures.values())
    assert m.analyse(tmp_path, None) == {}



# ---------------------------------------------------------------------------------------- CIFAR-10 (binary)
@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-bin"
    root.mkdir()
    for i in range(1, 6):
        (root / f"data_batch_{i}.bin").write_bytes(write_cifar_bin(root, i, 12)[2])
    (root / "test_batch.bin").write_bytes(write_cifar_bin(root, 0, 10)[2])
    return root


def test_cifar_binary_records(tmp_path):
    img, labels, raw = write_cifar_bin(tmp_path, 7, 3)
    (tmp_path / "b.bin").write_bytes(raw)
    x, y = read_cifar_bin(tmp_path / "b.bin")
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist() == labels.tolist()
    assert torch.equal(x, torch.from_numpy(img))
    assert x[0, 0, 0, :4].tolist() == list(raw[1:5])  # the red plane comes first, row by row, after the label
    assert x[1, 2, 31, 31] == raw[2 * 3073 - 1]
    (tmp_path / "cut.bin").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="3073-byte"):
        read_cifar_bin(tmp_path / "cut.bin")


def test_cifar_datamodule_split_and_errors(cifar_dir, tmp_path):
    dm = CIFAR10DataModule(data_dir=str(cifar_dir.parent), val_size=10, batch_size=8)
    dm.prepare_data()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (50, 10, 10)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0 and dm.classes[0] == "airplane"
    missing = CIFAR10DataModule(data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-bin"):
        missing.prepare_data()


def test_cifar_localrf_recipe_through_the_cli(cifar_dir, tmp_path):
    """`zoo fit --trainer.fast_dev_run` of the CIFAR-10 recipe on the fixture binary records, in process."""
    cli = zoo_in_process("fit", "--config", "configs/forward_forward/cifar10_localrf.yaml", "--trainer.fast_dev_run=2",
                         f"--data.init_args.data_dir={cifar_dir}", "--data.init_args.val_size=10",
                         "--data.init_args.batch_size=8", "--model.init_args.channels=[1, 1]",
                         "--model.init_args.readout_layers=1", "--trainer.enable_progress_bar=false",
                         "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}")
    assert cli.trainer.state.finished and cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2
