"""REMEDIS (arXiv 2205.09723): BiT's ResNet-v2 against its definition (weight standardisation, group norm, timm's
BiT-R50x1), each stage's objective by hand, the encoder carried from one stage's release to the next, REMEDIS'
extra views, the derived out-of-distribution digits, learning one batch, the release round trip."""
import pytest
import torch
import torch.nn.functional as F
from conftest import round_trip

import zoo
from zoo._hub import WeightsMismatchError
from zoo.data.digits import DigitsDataModule
from zoo.data.views import SimCLRViews
from zoo.losses import nt_xent
from zoo.models.remedis import REMEDIS
from zoo.nn.bit import bit_encoder

SMALL = dict(num_classes=3, in_chans=1, depth=26, width=0.125, groups=4)


def test_convolutions_are_weight_standardised_and_norms_are_groups_of_channels():
    """The stem's convolution applies (w - mean) / sqrt(var + 1e-8) per output filter (biased variance, BiT's
    ε); the first block's norm is GroupNorm over `groups` groups followed by ReLU (pre-activation)."""
    torch.manual_seed(0)
    f = bit_encoder(**{k: v for k, v in SMALL.items() if k != "num_classes"}).eval()
    x = torch.randn(2, 1, 20, 20)
    conv = f.stem.conv
    w = conv.weight
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    by_hand = F.conv2d(x, (w - mean) / torch.sqrt(var + 1e-8), stride=2, padding=3)
    assert torch.allclose(conv(x), by_hand, atol=1e-5)
    norm = f.stages[0].blocks[0].norm1
    h = torch.randn(2, norm.num_channels, 5, 5)
    expected = F.relu(F.group_norm(h, 4, norm.weight, norm.bias, norm.eps))
    assert norm.num_groups == 4 and torch.allclose(norm(h), expected, atol=1e-6)


def test_depth_50_width_1_is_bit_r50x1():
    """bit_encoder(50) is timm's resnetv2_50x1_bit without its head: the same weights give the same features."""
    import timm

    torch.manual_seed(0)
    ours = bit_encoder(50).eval()
    ref = timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=0).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x)) and ours.num_features == 2048


def test_widths_that_groups_cannot_split_are_refused():
    with pytest.raises(ValueError, match="16 channels, which 32 groups do not split"):
        bit_encoder(26, 0.25)
    with pytest.raises(ValueError, match="depths"):
        bit_encoder(34)


def test_each_stage_builds_only_its_heads_and_reads_images_in_minus_one_to_one():
    torch.manual_seed(0)
    ssl = REMEDIS("contrastive", **SMALL).eval()
    tune = REMEDIS("finetune", **SMALL).eval()
    assert any(k.startswith("net.g.") for k in ssl.state_dict())
    assert not any(k.startswith("net.g.") for k in tune.state_dict())
    assert tune.net.classifier.weight.abs().sum() == 0  # BiT's zero-initialised head
    x = torch.rand(4, 1, 28, 28)
    h, z = ssl.net.project(x)
    assert h.shape == (4, 32 * 8) and z.shape == (4, 128)
    assert torch.equal(h, ssl.net.f(2 * x - 1))
    assert tune(x).shape == (4, 3)
    with pytest.raises(RuntimeError, match="no projection head"):
        tune.net.project(x)
    with pytest.raises(ValueError, match="stage="):
        REMEDIS("pretrain", **SMALL)
    with pytest.raises(ValueError, match="nonlinear head"):
        REMEDIS("contrastive", **SMALL, head_layers=1)


def test_contrastive_stage_is_nt_xent_plus_a_probe_on_detached_features(monkeypatch):
    """loss = NT-Xent(g(f(a)), g(f(b))) + CE(classifier(stop_grad(h)), labels of both views); unlabelled images
    (label -1) add nothing to the probe, and the classifier's gradient never reaches f."""
    torch.manual_seed(0)
    m = REMEDIS("contrastive", **SMALL).train()
    monkeypatch.setattr(m, "log", lambda *a, **k: None)
    a, b = torch.rand(6, 1, 28, 28), torch.rand(6, 1, 28, 28)
    y = torch.tensor([0, 1, 2, -1, -1, 1])
    torch.manual_seed(1)
    loss = m.training_step(((a, b), y), 0)
    torch.manual_seed(1)
    h, z = m.net.project(torch.cat([a, b]))
    expected = nt_xent(z[:6], z[6:], 0.1) + F.cross_entropy(m.net.classifier(h.detach()), y.repeat(2),
                                                              ignore_index=-1)
    assert torch.allclose(loss, expected, atol=1e-6)
    m.zero_grad()
    F.cross_entropy(m.net.classifier(h.detach()), y.repeat(2), ignore_index=-1).backward()
    assert all(p.grad is None for p in m.net.f.parameters())
    none = m.training_step(((a, b), torch.full((6,), -1)), 0)
    h, z = m.net.project(torch.cat([a, b]))
    assert torch.isfinite(none) and torch.allclose(none, nt_xent(z[:6], z[6:], 0.1), atol=1e-5)


def test_stages_carry_the_encoder_through_releases(tmp_path):
    """Stage 2 and 3 copy f from the previous release (its heads left out); fine-tuning a fine-tuned release
    also goes on with its classifier; a release of another width is refused naming the weights."""
    torch.manual_seed(0)
    up = REMEDIS("supervised", **SMALL)
    up.net.classifier.weight.data.normal_()
    up_path = zoo.save_pretrained(up, tmp_path / "up")
    ssl = REMEDIS("contrastive", **SMALL, pretrained=str(up_path))
    ssl.setup("fit")
    assert all(torch.equal(v, up.state_dict()[k]) for k, v in ssl.state_dict().items() if k.startswith("net.f."))
    assert ssl.net.classifier.weight.abs().sum() == 0
    ssl_path = zoo.save_pretrained(ssl, tmp_path / "ssl")
    tune = REMEDIS("finetune", **SMALL, pretrained=str(ssl_path))
    tune.setup("fit")
    assert torch.equal(tune.net.f.stem.conv.weight, ssl.net.f.stem.conv.weight)
    tune.net.classifier.weight.data.normal_()
    again = REMEDIS("finetune", **SMALL, pretrained=str(zoo.save_pretrained(tune, tmp_path / "tune")))
    again.setup("fit")
    assert torch.equal(again.net.classifier.weight, tune.net.classifier.weight)
    with pytest.raises(WeightsMismatchError, match="wrong shape"):
        REMEDIS("finetune", **{**SMALL, "width": 0.25, "groups": 8}, pretrained=str(ssl_path)).setup("fit")
    with pytest.raises(ValueError, match="not both"):
        REMEDIS("finetune", **SMALL, pretrained=str(ssl_path), weights=str(ssl_path))
    other = zoo.save_pretrained(zoo.create("mlp", in_features=784, hidden=[8], num_classes=3), tmp_path / "mlp")
    with pytest.raises(ValueError, match="no REMEDIS encoder weights"):
        REMEDIS("finetune", **SMALL, pretrained=str(other)).setup("fit")


def test_fine_tuning_learns_one_batch(monkeypatch):
    torch.manual_seed(0)
    m = REMEDIS("finetune", **SMALL, optimizer="adam", lr=1e-2).train()
    monkeypatch.setattr(m, "log", lambda *a, **k: None)
    x, y = torch.rand(12, 1, 28, 28), torch.arange(12) % 3
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = m.training_step(([x, torch.zeros_like(x)], y), 0)  # two-view batches: the first view
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_zero_shot_ood_accuracy_is_the_accuracy_on_the_shifted_test_split():
    torch.manual_seed(0)
    m = REMEDIS("finetune", **{**SMALL, "num_classes": 10},
                ood_data={"class_path": "zoo.data.DigitsDataModule", "init_args": {"size": 28}})
    m.net.classifier.weight.data.normal_()
    out = m.analyse(None)
    dm = DigitsDataModule(size=28)
    dm.setup("test")
    x, y = dm.test_set.__getitems__(list(range(len(dm.test_set))))
    with torch.no_grad():
        assert out["metrics"]["test/ood_acc"] == pytest.approx((m.eval()(x).argmax(1) == y).float().mean().item())
    assert REMEDIS("finetune", **SMALL).analyse(None) == {}
    with pytest.raises(ValueError, match="class_path"):
        REMEDIS("finetune", **SMALL, ood_data={"init_args": {}})


def test_digits_on_mnists_canvas_are_the_8x8_digits_three_times_larger_in_the_middle():
    small, big = DigitsDataModule(size=8), DigitsDataModule(size=28)
    small.setup()
    big.setup()
    x8, y8 = small.test_set[5]
    x28, y28 = big.test_set[5]
    assert y8 == y28 and x28.shape == (1, 28, 28)
    assert torch.equal(x28[0, 2:26, 2:26], torch.kron(x8[0], torch.ones(3, 3)))
    assert x28[0, :2].sum() == 0 and x28[0, :, 26:].sum() == 0
    with pytest.raises(ValueError, match="size=16"):
        DigitsDataModule(size=16)


def test_remedis_views_equalise_deform_and_refuse_bad_settings():
    from torchvision.transforms.v2 import functional as TF

    torch.manual_seed(0)
    x = torch.rand(1, 28, 28) * 0.3  # a dim image: equalisation spreads it over [0, 1]
    a, b = SimCLRViews(28, crop=False, color=False, equalize=1.0)(x)
    assert torch.allclose(a, TF.equalize(x)) and a.max() > 0.9
    plain = SimCLRViews(28, crop=False, color=False)(x)[0]
    assert torch.allclose(plain, x, atol=1e-6)
    bent = SimCLRViews(28, crop=False, color=False, elastic=34.0)(x)[0]
    assert not torch.allclose(bent, x, atol=1e-3)
    turned = SimCLRViews(28, crop=False, color=False, rotation=30.0)(x)[0]
    assert not torch.allclose(turned, x, atol=1e-3)
    with pytest.raises(ValueError, match="out of range"):
        SimCLRViews(28, equalize=1.5)


def test_release_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    m = REMEDIS("contrastive", **SMALL)
    back = round_trip(m, tmp_path / "a", torch.rand(3, 1, 28, 28))
    assert back.hparams.stage == "contrastive" and "pretrained" not in back.hparams


def test_a_label_fraction_smaller_than_a_batch_trains_as_one_batch():
    """1% of the UCI digits is 10 images (one a class): the two-view loader, which drops the last partial batch
    as SimCLR's input pipeline does, gives them as one batch instead of none."""
    from zoo.data.views import TwoViewDigitsDataModule

    dm = TwoViewDigitsDataModule(batch_size=32, label_fraction=0.01)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and batches[0][1].sort().values.tolist() == list(range(10))
    dm = TwoViewDigitsDataModule(batch_size=32, label_fraction=1.0)
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 1257 // 32


def test_multilabel_stages_use_a_sigmoid_per_class_and_score_the_mean_auc(monkeypatch):
    """CheXpert's targets: the loss is the mean binary cross-entropy over classes (by hand), rows with a -1 (unlabelled)
    skipped; evaluation logs the macro ROC AUC (brute force over positive/negative pairs) and predictions are
    probabilities; single-label-only options are refused."""
    torch.manual_seed(0)
    m = REMEDIS("finetune", **dict(SMALL, num_classes=4), multilabel=True)
    scores, y = torch.randn(6, 4), torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0],
                                                  [0, 0, 1, 1], [-1, -1, -1, -1]])
    p = torch.sigmoid(scores[:5])
    by_hand = -(y[:5] * p.log() + (1 - y[:5]) * (1 - p).log()).mean()
    torch.testing.assert_close(m.supervised_loss(scores, y), by_hand)
    logged = {}
    monkeypatch.setattr(m, "log", lambda k, v, **kw: logged.__setitem__(k, v))
    monkeypatch.setattr(m, "forward", lambda x: scores[:5])
    m.evaluate((torch.zeros(5, 1, 28, 28), y[:5]), "val")

    def auc(s, t):  # the probability that a positive outscores a negative, ties counting a half
        pos, neg = s[t == 1], s[t == 0]
        return ((pos[:, None] > neg[None]).float() + 0.5 * (pos[:, None] == neg[None]).float()).mean()

    want = torch.stack([auc(scores[:5, c], y[:5, c]) for c in range(4)]).mean()
    torch.testing.assert_close(logged["val/auc"].compute(), want)
    probs = m.predict_step((torch.zeros(5, 1, 28, 28),), 0)
    torch.testing.assert_close(probs, torch.sigmoid(scores[:5]))
    with pytest.raises(ValueError, match="single-label"):
        REMEDIS("finetune", **SMALL, multilabel=True, ood_data={"class_path": "zoo.data.DigitsDataModule"})


def test_linear_evaluation_trains_the_classifier_on_a_frozen_encoder(monkeypatch):
    torch.manual_seed(0)
    m = REMEDIS("finetune", **SMALL, linear_eval=True).train()
    monkeypatch.setattr(m, "log", lambda *a, **k: None)
    f_before = {k: v.clone() for k, v in m.net.f.state_dict().items()}
    assert not any(q.requires_grad for q in m.net.f.parameters())
    opt = torch.optim.SGD([q for q in m.parameters() if q.requires_grad], lr=0.5)
    x, y = torch.rand(12, 1, 28, 28), torch.arange(12) % 3
    for _ in range(3):
        opt.zero_grad()
        loss = m.training_step((x, y), 0)
        loss.backward()
        opt.step()
    assert all(torch.equal(v, m.net.f.state_dict()[k]) for k, v in f_before.items())
    assert m.net.classifier.weight.abs().sum() > 0  # the zero-initialised head moved
    with torch.no_grad():
        h = m.net.features(x)
    torch.testing.assert_close(m(x), m.net.classifier(h))
    with pytest.raises(ValueError, match="'finetune' stage option"):
        REMEDIS("contrastive", **SMALL, linear_eval=True)


def test_multilabel_label_fractions_are_seeded_random_shares_with_every_class_positive():
    from zoo.data.views import labelled_subset

    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1], [0, 0], [1, 0], [0, 1], [1, 1]])
    keep = labelled_subset(labels, 0.5, seed=3)
    assert len(keep) == 5 and keep.tolist() == sorted(set(keep.tolist()))
    assert torch.equal(keep, labelled_subset(labels, 0.5, seed=3))
    assert not torch.equal(keep, labelled_subset(labels, 0.5, seed=4)) or len(keep) == len(labels)
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] without a positive"):
        labelled_subset(torch.tensor([[1, 0], [1, 0], [1, 1], [1, 0]]), 0.5, seed=0)
