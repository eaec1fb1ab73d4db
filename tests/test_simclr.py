"""SimCLR (arXiv 2002.05709): the encoder's official layout, the projection heads, the two-view augmentation
pipeline (zoo.data.views), the optimiser's exclusions, learning one batch, linear evaluation, the release round
trip. NT-Xent, with its cross-rank gather, is tested in test_losses.py."""
import pytest
import torch
from conftest import round_trip

from zoo._registry import model_class
from zoo.data.views import SimCLRViews, TwoViews
from zoo.metrics import linear_probe
from zoo.models.simclr import ProjectionHead, SimCLR, resnet_encoder


def test_views_are_two_independent_draws_in_range():
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    a, b = SimCLRViews(32, strength=0.5)(image)
    assert a.shape == b.shape == (3, 32, 32) and not torch.equal(a, b)
    assert 0 <= float(torch.stack([a, b]).min()) and float(torch.stack([a, b]).max()) <= 1
    torch.manual_seed(1)
    again = SimCLRViews(32, strength=0.5)(image)
    assert torch.equal(again[0], a) and torch.equal(again[1], b)  # seeded by torch's generator, as workers seed it


def test_ablations_switch_off_crop_and_colour():
    """crop=False, color=False: the view is the image; colour alone keeps every pixel's place (a pixel-wise
    map of the image, so an all-constant image stays constant); crop alone keeps the intensities' range."""
    torch.manual_seed(0)
    image = torch.rand(3, 16, 16)
    a, b = SimCLRViews(16, crop=False, color=False)(image)
    assert torch.equal(a, image) and torch.equal(b, image)
    flat = torch.full((3, 16, 16), 0.4)
    for view in SimCLRViews(16, crop=False)(flat):
        assert torch.allclose(view, view[:, :1, :1].expand_as(view))
    grey = torch.rand(1, 28, 28)
    for view in SimCLRViews(28, color=False)(grey):
        assert view.shape == (1, 28, 28) and view.min() >= grey.min() - 1e-6 and view.max() <= grey.max() + 1e-6


def test_two_views_dataset_and_bad_input():
    base = [(torch.rand(784), 3), (torch.rand(784), 7)]
    ds = TwoViews(base, SimCLRViews(28, blur=True), shape=(1, 28, 28))
    (a, b), y = ds[1]
    assert len(ds) == 2 and y == 7 and a.shape == b.shape == (1, 28, 28)
    with pytest.raises(ValueError, match="one float image"):
        SimCLRViews(28)(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="crop_scale"):
        SimCLRViews(28, crop_scale=(0.5, 0.1))


def test_encoder_widths_stems_and_heads():
    """Every width scales with the multiplier, the stem included (64·w channels); the CIFAR stem keeps the
    resolution; ResNet-50 at width 1 has the standard 23.5M weights without its classifier; heads as the official
    projection_head (nonlinear: hidden layers of the encoder's width with batch norm and ReLU; linear; none)."""
    f = resnet_encoder(18, 0.25, in_chans=1, cifar_stem=True)
    assert f.conv1.out_channels == 16 and f.conv1.stride == (1, 1) and isinstance(f.maxpool, torch.nn.Identity)
    assert [f.layer1[0].conv1.in_channels, f.num_features] == [16, 128]
    assert resnet_encoder(18, 2.0, cifar_stem=False).conv1.out_channels == 128
    assert sum(p.numel() for p in resnet_encoder(50, 1.0, cifar_stem=False).parameters()) == 23_508_032
    assert f(torch.rand(2, 1, 28, 28)).shape == (2, 128)
    h = torch.randn(8, 32)
    kinds = {k: ProjectionHead(32, 16, 3, k) for k in ("nonlinear", "linear", "none")}
    assert [type(m).__name__ for m in kinds["nonlinear"].net][:3] == ["Linear", "BatchNorm1d", "ReLU"]
    assert len(kinds["nonlinear"].net) == 8 and kinds["linear"](h).shape == (8, 16) and torch.equal(kinds["none"](h), h)
    assert not any(m.bias is not None for m in kinds["nonlinear"].net if isinstance(m, torch.nn.Linear))
    with pytest.raises(ValueError, match="depth"):
        resnet_encoder(20)


def _fit_one_batch(module, batch, steps):
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def test_learns_one_batch_and_the_probe_leaves_the_encoder_alone(monkeypatch):
    """On one batch of two views, NT-Xent + probe loss falls; the probe's loss sends no gradient into f or g."""
    torch.manual_seed(0)
    module = SimCLR(in_chans=1, depth=18, width=0.125, num_classes=3)
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    x, y = torch.rand(16, 1, 12, 12), torch.randint(0, 3, (16,))
    views = SimCLRViews(12, strength=0.5)
    batch = ([torch.stack([views(i)[0] for i in x]), torch.stack([views(i)[1] for i in x])], y)
    losses = _fit_one_batch(module.train(), batch, 30)
    assert losses[-1] < 0.5 * losses[0]
    module.zero_grad()
    h = module.net.f(batch[0][0])
    torch.nn.functional.cross_entropy(module.probe(h.detach()), y).backward()
    assert all(p.grad is None for p in module.net.parameters())


def test_supervised_baseline_trains_the_encoder_through_the_classifier(monkeypatch):
    """objective="supervised": cross-entropy on the first view falls on one batch, its gradient reaches the
    encoder (unlike the probe's), and a projection head, which it would never train, is refused."""
    torch.manual_seed(0)
    module = SimCLR(in_chans=1, depth=18, width=0.125, num_classes=3, head="none", objective="supervised")
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    x, y = torch.rand(16, 1, 12, 12), torch.randint(0, 3, (16,))
    losses = _fit_one_batch(module.train(), ([x, torch.zeros_like(x)], y), 30)
    assert losses[-1] < 0.2 * losses[0]
    module.zero_grad()
    module.training_step(([x, x], y), 0).backward()
    assert module.net.f.conv1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="head='none'"):
        SimCLR(objective="supervised")


def test_lars_groups_are_the_official_ones_and_the_rate_scales():
    """google-research/simclr's exclusions: every weight tensor adapted by LARS's trust ratio and decayed; 1-D
    tensors (batch norm, biases, the head's scale) neither; the probe not adapted, its weight decay plain; and the
    legacy "decayed" rule, timm's groups; lr = base x B/256 over all ranks."""
    from types import SimpleNamespace

    module = SimCLR(in_chans=1, depth=18, width=0.125, lr=0.5, weight_decay=1e-4, warmup_epochs=1.0)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(batch_size=128), world_size=4, max_epochs=10,
                              estimated_stepping_batches=100)
    module._trainer = trainer  # the attributes configure_optimizers reads from a Trainer
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    adapted, head, flat = opt.param_groups
    assert adapted["always_adapt"] and adapted["weight_decay"] == 1e-4 and all(p.ndim > 1 for p in adapted["params"])
    assert {id(p) for p in head["params"]} == {id(module.probe.weight)}
    assert head["weight_decay"] == 0 and head["plain_decay"] == 1e-4 and not head["always_adapt"]
    assert flat["weight_decay"] == 0 and not flat["always_adapt"] and all(p.ndim == 1 for p in flat["params"])
    assert opt.defaults["lr"] == pytest.approx(0.5 * 128 * 4 / 256)
    assert sched.get_last_lr()[0] == pytest.approx(opt.defaults["lr"] / 10)  # step 0 of a 10-step warm-up

    legacy = SimCLR(in_chans=1, depth=18, width=0.125, lr=0.5, weight_decay=1e-4, lars_rule="decayed")
    legacy._trainer = trainer
    decay, no_decay = sorted(legacy.configure_optimizers()["optimizer"].param_groups,
                             key=lambda g: g["weight_decay"], reverse=True)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0
    assert any(p is legacy.probe.weight for p in decay["params"])  # timm's rule adapts the probe too


@pytest.mark.parametrize("rule", ["official", "decayed"])
def test_lars_without_weight_decay_still_adapts_under_the_official_rule(rule):
    """SimCLRv2's fine-tuning has no weight decay: the official LARS still scales each weight's step by
    0.001·‖w‖/‖g‖; timm's rule then adapts nothing (momentum SGD). The classifier is never adapted."""
    from zoo.models.simclrv2 import SimCLRv2FineTune

    torch.manual_seed(0)
    module = SimCLRv2FineTune(num_classes=3, depth=18, width=0.125, in_chans=1, cifar_stem=True, head_layers=2,
                              out_features=8, lr=0.1, lr_scaling="none", weight_decay=0.0, lars_rule=rule)
    opt = module.configure_optimizers()["optimizer"]
    w, c = module.net.f.conv1.weight, module.net.classifier.weight
    with torch.no_grad():
        c.normal_()
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    before_w, before_c = w.detach().clone(), c.detach().clone()
    opt.step()
    step_w = float((before_w - w.detach()).norm())
    if rule == "official":
        assert step_w == pytest.approx(0.1 * 0.001 * float(before_w.norm()), rel=1e-4)
    else:
        assert step_w == pytest.approx(0.1 * float(torch.ones_like(w).norm()), rel=1e-4)
    assert float((before_c - c.detach()).norm()) == pytest.approx(0.1 * float(torch.ones_like(c).norm()), rel=1e-4)


def test_the_plain_decay_of_a_head_is_added_to_its_gradient():
    from zoo.optim import _lars_class

    w = torch.nn.Parameter(torch.full((2, 2), 2.0))
    opt = _lars_class()([{"params": [w], "weight_decay": 0.0, "plain_decay": 0.5}], lr=0.1, momentum=0.0)
    w.grad = torch.ones_like(w)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((2, 2), 2.0 - 0.1 * (1 + 0.5 * 2.0)))


def test_linear_probe_chooses_weight_decay_on_validation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(900, 6, generator=g)
    y = (x @ torch.randn(6, 3, generator=g)).argmax(1)  # three classes, linearly separable
    out = linear_probe(x[:600], y[:600], x[600:750], y[600:750], x[750:], y[750:], num_classes=3)
    assert out["test_acc"] > 0.9 and out["l2"] in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    noise = linear_probe(x[:600], torch.randint(0, 3, (600,), generator=g), x[600:750], y[600:750], x[750:],
                         y[750:], num_classes=3)
    assert noise["test_acc"] < 0.6


def test_release_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    module = SimCLR(in_chans=1, depth=18, width=0.125, head="linear")
    back = round_trip(module, tmp_path, torch.rand(3, 1, 28, 28))
    assert back.hparams.head == "linear" and model_class("simclr") is SimCLR


def test_cifar_and_image_folder_two_view_data(tmp_path):
    """The paper's two other settings read their real layouts: CIFAR-10's binary batches, and ImageNet's
    train/<class>/, val/<class>/ folders (JPEG and PNG, grayscale files read as RGB, centre-cropped for
    evaluation, the official label-subset files); an unreadable file is an error naming it."""
    from image_fixture import write_cifar_bin, write_image_folder

    from zoo.data.views import TwoViewCIFAR10DataModule, TwoViewImageFolderDataModule

    cifar = tmp_path / "cifar-10-batches-bin"
    cifar.mkdir()
    for i in range(1, 6):
        (cifar / f"data_batch_{i}.bin").write_bytes(write_cifar_bin(cifar, i, 12)[2])
    (cifar / "test_batch.bin").write_bytes(write_cifar_bin(cifar, 0, 10)[2])
    dm = TwoViewCIFAR10DataModule(data_dir=str(tmp_path), batch_size=8, val_size=10)
    dm.setup()
    (a, b), y = next(iter(dm.train_dataloader()))
    assert a.shape == b.shape == (8, 3, 32, 32) and y.shape == (8,) and len(dm.train_set) == 50

    root = write_image_folder(tmp_path / "imagenet")
    dm = TwoViewImageFolderDataModule(data_dir=str(root), batch_size=4, size=32, num_workers=0)
    dm.setup()
    assert dm.classes == ("china", "flower") and len(dm.train_set) == 8 and dm.val_set is dm.test_set
    (a, b), y = next(iter(dm.train_dataloader()))
    assert a.shape == b.shape == (4, 3, 32, 32) and 0 <= float(a.min()) and float(a.max()) <= 1
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]
    listed = tmp_path / "1percent.txt"
    listed.write_text("china_train_0.jpg\nflower_train_1.png\n")
    dm = TwoViewImageFolderDataModule(data_dir=str(root), size=32, subset_file=str(listed))
    dm.setup()
    assert [p.name for p in dm.train_set.paths] == ["china_train_0.jpg", "flower_train_1.png"]
    (root / "train" / "china" / "broken.jpg").write_bytes(b"not a jpeg")
    dm = TwoViewImageFolderDataModule(data_dir=str(root), size=32)
    dm.setup()
    with pytest.raises(ValueError, match="broken.jpg: not a readable image"):
        dm.train_set[dm.train_set.paths.index(root / "train" / "china" / "broken.jpg")]
