"""CapsNet, CNN+R and CNN+CR (zoo.models.capsnet): the attack/detector interface (shapes, class conditioning by
the true or the predicted class, the losses by hand), overfitting one batch, `zoo fit` (one process and DDP),
the release round trip with the detection threshold, analyse(), and the SVHN .mat reader."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import round_trip

import zoo
from zoo.models.capsnet.model import sum_squared_error
from zoo.nn.capsules import margin_loss

TINY = {"capsnet": {"conv_channels": 8, "primary_capsules": 2, "judge": None},
        "cnn_r": {"conv_channels": 8, "conv2_channels": 16, "judge": None},
        "cnn_cr": {"conv_channels": 8, "conv2_channels": 16, "judge": None}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is faster than two, and a loaded machine cannot stall a thread pool."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(key: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return zoo.create(key, **{**TINY[key], **kw})


def decoder_input(module, x, y=None) -> torch.Tensor:
    seen = []
    handle = module.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    module.scores_and_reconstruction(x, y)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("key", ["capsnet", "cnn_r", "cnn_cr"])
def test_interface_shapes_range_and_gradient(key):
    m = tiny(key)
    x = torch.rand(5, 1, 28, 28, requires_grad=True)
    scores, recon = m.scores_and_reconstruction(x)
    assert scores.shape == (5, 10) and recon.shape == (5, 1, 28, 28)
    assert (recon >= 0).all() and (recon <= 1).all()
    assert torch.equal(scores, m(x))
    m.class_loss(scores, torch.arange(5)).sum().add(recon.sum()).backward()
    assert x.grad.abs().sum() > 0
    assert m.class_loss(scores, torch.arange(5)).shape == (5,)
    assert math.isnan(m.detection_threshold.item()) and "detection_threshold" in m.state_dict()
    rgb = tiny(key, in_channels=3, image_size=32)
    s, r = rgb.scores_and_reconstruction(torch.rand(2, 3, 32, 32))
    assert s.shape == (2, 10) and r.shape == (2, 3, 32, 32)


def test_capsnet_scores_are_capsule_lengths_and_decoder_sees_one_capsule():
    m = tiny("capsnet")
    x, y = torch.rand(6, 1, 28, 28), torch.tensor([3, 1, 4, 1, 5, 9])
    v = m.capsnet(x)
    assert torch.allclose(m(x), v.norm(dim=-1)) and (m(x) < 1).all()
    for labels, given in ((y, y), (v.norm(dim=-1).argmax(1), None)):  # true class at training, winner at test
        z = decoder_input(m, x, given).view(6, 10, 16)
        keep = F.one_hot(labels, 10).bool()
        assert torch.equal(z[keep], v[keep]) and (z[~keep] == 0).all()
    pred = m(x).argmax(1)
    with torch.no_grad():
        assert torch.equal(m.scores_and_reconstruction(x)[1], m.scores_and_reconstruction(x, pred)[1])
        assert not torch.equal(m.scores_and_reconstruction(x)[1], m.scores_and_reconstruction(x, (pred + 1) % 10)[1])


def test_cnn_cr_masks_its_hidden_layer_by_class_and_cnn_r_ignores_the_class():
    x, y = torch.rand(6, 1, 28, 28), torch.tensor([3, 1, 4, 1, 5, 9])
    cr = tiny("cnn_cr")
    logits, h = cr.encoder(x)
    for labels, given in ((y, y), (logits.argmax(1), None)):
        z = decoder_input(cr, x, given).view(6, 10, 16)
        keep = F.one_hot(labels, 10).bool()
        assert torch.equal(z[keep], h.view(6, 10, 16)[keep].detach()) and (z[~keep] == 0).all()
    r = tiny("cnn_r")
    assert torch.equal(decoder_input(r, x, y), r.encoder(x)[1].detach())
    with torch.no_grad():
        assert torch.equal(r.scores_and_reconstruction(x, y)[1], r.scores_and_reconstruction(x)[1])


def test_losses_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [2.0, 0.0, 0.0]])
    # the attack loss by default: the best other score minus the class's, on logits as on capsule lengths
    assert tiny("cnn_cr").class_loss(logits, torch.tensor([1, 2])).tolist() == pytest.approx([-math.log(3.0), 2.0])
    cnn = tiny("cnn_r", attack_loss="cross_entropy")
    want = [-math.log(3 / 5), -math.log(1 / (math.exp(2) + 2))]  # softmax(0, ln 3, 0)[1] = 3/5
    assert cnn.class_loss(logits, torch.tensor([1, 2])).tolist() == pytest.approx(want)
    caps = tiny("capsnet")
    lengths = torch.tensor([[0.5, 0.3, 0.0], [0.95, 0.05, 0.2]])
    y = torch.tensor([0, 0])
    assert caps.training_class_loss(lengths, y).tolist() == pytest.approx([0.4**2 + 0.5 * 0.2**2, 0.5 * 0.1**2])
    assert caps.class_loss(lengths, y).tolist() == pytest.approx([0.3 - 0.5, 0.2 - 0.95])
    ce = tiny("capsnet", attack_loss="cross_entropy")
    assert ce.class_loss(lengths, y).tolist() == pytest.approx(F.cross_entropy(lengths, y, reduction="none").tolist())
    margin = tiny("capsnet", attack_loss="margin")
    assert torch.allclose(margin.class_loss(lengths, y), caps.training_class_loss(lengths, y))
    with pytest.raises(ValueError):
        tiny("capsnet", attack_loss="hinge")
    with pytest.raises(ValueError):
        tiny("cnn_cr", attack_loss="margin")
    # training objective: margin loss + 0.0005 x summed squared error, the decoder fed the true class
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        total, cls, rec = caps.loss(x, y)
        v = caps.capsnet(x)
        r = caps.decoder(torch.where(F.one_hot(y, 10).bool()[..., None], v, 0).flatten(1))
        assert torch.allclose(cls, margin_loss(v, y)) and torch.allclose(rec, ((x - r) ** 2).sum((1, 2, 3)).mean())
        assert torch.allclose(total, cls + 0.0005 * rec)
        assert torch.allclose(sum_squared_error(x, r), ((x - r) ** 2).flatten(1).sum(1))


@pytest.mark.parametrize("key", ["capsnet", "cnn_cr"])
def test_overfits_one_batch(key, fixture_data):
    x, y = fixture_data.train_set.__getitems__(list(range(20)))
    m = tiny(key, conv_channels=16)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        total, _, rec = m.loss(x, y)
        first = first if first is not None else (total.item(), rec.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    with torch.no_grad():
        total, _, rec = m.loss(x, y)
        assert (m(x).argmax(1) == y).all()
    assert total.item() < 0.3 * first[0] and rec.item() < 0.7 * first[1]



@pytest.mark.parametrize("key", ["capsnet", "cnn_r", "cnn_cr"])
def test_release_round_trip_keeps_the_threshold(key, tmp_path):
    m = tiny(key)
    x = torch.rand(3, 1, 28, 28)
    unset = zoo.load(zoo.save_pretrained(m, tmp_path / "unset"))
    assert math.isnan(unset.detection_threshold.item())
    m.detection_threshold.fill_(2.718)
    back = round_trip(m, tmp_path, x)
    assert back.detection_threshold.item() == m.detection_threshold.item()
    with torch.no_grad():
        for a, b in zip(m.scores_and_reconstruction(x), back.scores_and_reconstruction(x)):
            assert torch.equal(a, b)


def test_analyse_sets_the_darccc_threshold_and_reports(fixture_data, teacher_release, tmp_path):
    m = tiny("capsnet", conv_channels=16, judge=str(teacher_release), num_attack_examples=12)
    x, y = fixture_data.train_set.__getitems__(list(range(len(fixture_data.train_set))))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(15):
        opt.zero_grad()
        m.loss(x, y)[0].backward()
        opt.step()
    out = m.analyse(tmp_path, fixture_data)
    vx, _ = fixture_data.val_set.__getitems__(list(range(len(fixture_data.val_set))))
    with torch.no_grad():
        errors = sum_squared_error(vx, m.scores_and_reconstruction(vx)[1]).sqrt()
    want = torch.quantile(errors.double(), 0.95).item()
    assert m.detection_threshold.item() == pytest.approx(want, rel=1e-5)
    assert out["metrics"]["threshold"] == pytest.approx(want, rel=1e-5)
    assert (errors > m.detection_threshold).float().mean() <= 0.05
    assert {"pgd_success", "fgsm_success", "reconstructive_success"} <= set(out["metrics"])
    assert out["tables"] and all(p.is_file() for p in out["figures"].values())


# ----------------------------------------------------------------------------------------------------- SVHN
def write_svhn_mat(path, images: np.ndarray, digits: np.ndarray) -> None:
    """The official layout: X uint8 [32, 32, 3, N], y [N, 1] with 10 for the digit 0."""
    from scipy.io import savemat

    labels = np.where(digits == 0, 10, digits)[:, None].astype(np.uint8)
    savemat(str(path), {"X": images.transpose(2, 3, 1, 0), "y": labels})


def real_digits_rgb(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's real 8x8 digits drawn 4x larger as 3-channel 32x32 images (red: the digit, green: its inverse,
    blue: a fixed ramp), uint8 [N, 3, 32, 32]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.kron(d.images[offset:offset + n], np.ones((4, 4))) * (255.0 / 16.0)
    ramp = np.broadcast_to(np.linspace(0, 255, 32)[None, None, :], img.shape)
    rgb = np.stack([img, 255 - img, ramp], 1).round().astype(np.uint8)
    return rgb, d.target[offset:offset + n].astype(np.int64)


def test_svhn_mat_files(tmp_path, zoo_home):
    from zoo.data import SVHNDataModule, read_svhn_mat

    train, train_y = real_digits_rgb(60)
    test, test_y = real_digits_rgb(20, offset=60)
    assert (train_y == 0).any()
    write_svhn_mat(tmp_path / "train_32x32.mat", train, train_y)
    write_svhn_mat(tmp_path / "test_32x32.mat", test, test_y)
    x, y = read_svhn_mat(tmp_path / "test_32x32.mat")
    assert x.dtype == torch.uint8 and x.shape == (20, 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(test)) and y.tolist() == test_y.tolist()  # label 10 read as 0
    dm = SVHNDataModule(data_dir=str(tmp_path), val_size=10, batch_size=8)
    dm.prepare_data()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (50, 10, 20)
    xb, yb = next(iter(dm.test_dataloader()))
    assert xb.shape == (8, 3, 32, 32) and xb.max() <= 1 and torch.allclose(xb * 255, torch.from_numpy(test[:8]).float())
    with pytest.raises(FileNotFoundError, match="train_32x32.mat"):
        SVHNDataModule(data_dir=str(tmp_path / "nowhere")).prepare_data()
    from scipy.io import savemat

    savemat(str(tmp_path / "bad.mat"), {"X": train.transpose(2, 3, 1, 0), "y": train_y[:, None]})  # 0, not 10
    with pytest.raises(ValueError, match="1..10"):
        read_svhn_mat(tmp_path / "bad.mat")


@pytest.mark.parametrize("every", [None, 2000])
def test_learning_rate_decays_per_epoch_or_continuously_as_the_official_code(every):
    module = tiny("capsnet", lr=1e-3, lr_decay=0.96, lr_decay_steps=every)
    conf = module.configure_optimizers()
    sched = conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == ("epoch" if every is None else "step")
    if every is None:
        sched.step()
        assert conf["optimizer"].param_groups[0]["lr"] == pytest.approx(0.96e-3)
    else:  # the official exponential_decay without staircase, floored at 1e-6
        assert sched.lr_lambdas[0](1000) == pytest.approx(0.96**0.5)
        assert sched.lr_lambdas[0](4000) == pytest.approx(0.96**2)
        assert sched.lr_lambdas[0](10**7) == pytest.approx(1e-3)
