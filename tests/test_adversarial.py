"""zoo.adversarial: attacks, reconstruction detectors and their measures, on a small test double of the capsule
models' interface (a linear classifier with a linear class-conditional decoder) trained on the fixture digits."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo import adversarial as adv

EPS = 0.1


class LinearReconstructor(nn.Module):
    """Test double of `scores_and_reconstruction` / `class_loss` / `detection_threshold`: linear scores, and a
    reconstruction decoded from a linear code masked to the chosen class's block (as capsule masking does)."""

    def __init__(self, num_classes: int = 10, dim: int = 8):
        super().__init__()
        self.num_classes, self.dim, self.loss_kind = num_classes, dim, "cross_entropy"
        self.classifier = nn.Linear(784, num_classes)
        self.encoder = nn.Linear(784, num_classes * dim)
        self.decoder = nn.Linear(num_classes * dim, 784)
        self.register_buffer("detection_threshold", torch.tensor(float("nan")))

    def scores_and_reconstruction(self, x, y=None):
        flat = x.flatten(1)
        scores = self.classifier(flat)
        index = scores.argmax(1) if y is None else y
        mask = F.one_hot(index, self.num_classes).to(x.dtype).repeat_interleave(self.dim, 1)
        return scores, torch.sigmoid(self.decoder(self.encoder(flat) * mask)).view_as(x)

    def class_loss(self, scores, y):
        if self.loss_kind == "cw":
            return adv.cw_margin(scores, y)
        return F.cross_entropy(scores, y, reduction="none")


@pytest.fixture(scope="module")
def model(fixture_data):
    torch.manual_seed(0)
    m = LinearReconstructor()
    x, y = fixture_data.train_set[list(range(len(fixture_data.train_set)))]
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    for _ in range(150):
        scores, recon = m.scores_and_reconstruction(x, y)
        loss = m.class_loss(scores, y).mean() + F.binary_cross_entropy(recon, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def test_batch(fixture_data):
    return fixture_data.test_set[list(range(len(fixture_data.test_set)))]


def test_fgsm_is_one_signed_gradient_step_by_hand(model, test_batch):
    x, y = test_batch
    with torch.no_grad():
        p = model.classifier(x.flatten(1)).softmax(1)
    grad = ((p - F.one_hot(y, 10)) @ model.classifier.weight).view_as(x)  # ∇x of cross-entropy, linear scores
    expected = (x + EPS * grad.sign()).clamp(0, 1)
    got = adv.fgsm(model, x, y, EPS)
    assert torch.allclose(got, expected, atol=1e-6)
    t = adv.random_targets(y, 10, torch.Generator().manual_seed(0))
    grad_t = ((p - F.one_hot(t, 10)) @ model.classifier.weight).view_as(x)
    assert torch.allclose(adv.fgsm(model, x, y, EPS, target=t), (x - EPS * grad_t.sign()).clamp(0, 1), atol=1e-6)


def test_cw_margin_by_hand():
    scores = torch.tensor([[0.2, 0.5, 0.1], [3.0, -1.0, 2.0]])
    assert adv.cw_margin(scores, torch.tensor([0, 0])).tolist() == pytest.approx([0.3, -1.0])
    assert adv.cw_margin(scores, torch.tensor([1, 2])).tolist() == pytest.approx([-0.3, 1.0])


def test_targeted_fgsm_on_the_cw_margin_by_hand(model, test_batch):
    """Linear scores Wx + b: ∇x (s_j* − s_t) = W_j* − W_t, j* the best class other than the target."""
    x, y = test_batch
    t = adv.random_targets(y, 10, torch.Generator().manual_seed(0))
    with torch.no_grad():
        s = model.classifier(x.flatten(1))
    rival = s.masked_fill(F.one_hot(t, 10).bool(), -math.inf).argmax(1)
    grad = (model.classifier.weight[rival] - model.classifier.weight[t]).view_as(x)
    model.loss_kind = "cw"
    try:
        got = adv.fgsm(model, x, y, EPS, target=t)
    finally:
        model.loss_kind = "cross_entropy"
    assert torch.allclose(got, (x - EPS * grad.sign()).clamp(0, 1), atol=1e-6)


def test_an_attack_fixes_its_own_steps(model, test_batch):
    x, y = test_batch
    assert adv.ATTACKS["pgd_40"].steps == 40 and adv.ATTACKS["pgd_untargeted"].targeted is False
    forty = adv.attack(model, x, y, "pgd_40", eps=EPS, steps=10, generator=torch.Generator().manual_seed(0))
    again = adv.attack(model, x, y, "pgd", eps=EPS, steps=40, generator=torch.Generator().manual_seed(0))
    ten = adv.attack(model, x, y, "pgd", eps=EPS, steps=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(forty, again) and not torch.equal(forty, ten)


def test_union_thresholds_by_hand():
    """Detector A scores image i as i, detector B as 9 − i. Each alone at 20% flags two images (A: 8, 9; B: 0, 1),
    their union four; jointly both thresholds sit at the 9th-lowest score and the union flags images 0 and 9."""
    scores = torch.stack([torch.arange(10.0), 9 - torch.arange(10.0)])
    separate = torch.stack([s > torch.quantile(s, 0.8) for s in scores]).any(0)
    assert separate.float().mean() == pytest.approx(0.4)
    thresholds = adv.fit_union(scores, 0.2)
    assert thresholds.tolist() == [8.0, 8.0]
    assert adv.flag_union(scores, thresholds).nonzero().flatten().tolist() == [0, 9]
    # 30% cannot be met exactly: images 1 and 8 tie at the next rank, so the union stays at 20%
    assert adv.flag_union(scores, adv.fit_union(scores, 0.3)).float().mean() == pytest.approx(0.2)


def test_union_flags_five_percent_of_its_calibration_set():
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(1, 5000, generator=g)
    scores = torch.cat([shared + torch.randn(2, 5000, generator=g), torch.rand(1, 5000, generator=g)])
    separate = torch.stack([s > torch.quantile(s, 0.95) for s in scores]).any(0).float().mean()
    assert separate > 0.09  # three detectors at 5% each flag far more than 5% together
    rate = adv.flag_union(scores, adv.fit_union(scores, 0.05)).float().mean()
    assert 0.05 - 3 / 5000 <= rate <= 0.05 + 1e-6


@pytest.mark.parametrize("name", list(adv.ATTACKS))
@pytest.mark.parametrize("targeted", [True, False])
def test_every_attack_stays_in_the_ball_and_the_image_range(model, test_batch, name, targeted):
    x, y = test_batch
    t = adv.random_targets(y, 10, torch.Generator().manual_seed(1)) if targeted else None
    a = adv.attack(model, x, y, name, target=t, eps=EPS, steps=4, generator=torch.Generator().manual_seed(0))
    assert a.shape == x.shape
    assert (a - x).abs().max() <= EPS + 1e-6
    assert a.min() >= 0 and a.max() <= 1
    assert (a != x).any()


def test_pgd_raises_the_loss_and_reaches_targets(model, test_batch):
    x, y = test_batch
    with torch.no_grad():
        clean = model.class_loss(model.scores_and_reconstruction(x)[0], y)
        a = adv.pgd(model, x, y, EPS, generator=torch.Generator().manual_seed(0))
        attacked = model.class_loss(model.scores_and_reconstruction(a)[0], y)
    assert (attacked > clean).all()
    t = adv.random_targets(y, 10, torch.Generator().manual_seed(2))
    a = adv.pgd(model, x, y, 0.3, target=t, steps=20, generator=torch.Generator().manual_seed(0))
    pred = model.scores_and_reconstruction(a)[0].argmax(1)
    assert adv.attack_success(pred, y, t).float().mean() > 0.9


def test_pgd_random_start_is_seeded(model, test_batch):
    x, y = test_batch
    a, b = (adv.pgd(model, x, y, EPS, steps=1, step_size=0.0, generator=torch.Generator().manual_seed(5))
            for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_reconstructive_attack_lowers_the_reconstruction_error(model, test_batch):
    x, y = test_batch
    t = adv.random_targets(y, 10, torch.Generator().manual_seed(3))
    plain = adv.bim(model, x, y, EPS, target=t)
    recon = adv.reconstructive(model, x, y, EPS, target=t, recon=5.0)
    detector = adv.GlobalReconstruction()
    with torch.no_grad():
        assert detector.score(model, recon).mean() < detector.score(model, plain).mean()


def test_attack_success_counting():
    pred, y, t = torch.tensor([3, 1, 2, 0]), torch.tensor([1, 1, 0, 0]), torch.tensor([3, 2, 2, 1])
    assert adv.attack_success(pred, y, t).tolist() == [True, False, True, False]
    assert adv.attack_success(pred, y).tolist() == [True, False, True, False]
    pred, y, t = torch.tensor([3, 5]), torch.tensor([1, 1]), torch.tensor([4, 5])
    assert adv.attack_success(pred, y, t).tolist() == [False, True]


def test_random_targets_never_the_label():
    y = torch.arange(10).repeat(50)
    t = adv.random_targets(y, 10, torch.Generator().manual_seed(0))
    assert (t != y).all() and set(t.tolist()) == set(range(10))


def test_threshold_gives_five_percent_false_positives(model, fixture_data):
    threshold = adv.fit_threshold(model, fixture_data.val_dataloader())
    assert float(model.detection_threshold) == pytest.approx(threshold)
    scores = torch.cat([adv.GlobalReconstruction().score(model, x).detach() for x, _ in fixture_data.val_dataloader()])
    assert len(scores) == 40
    assert float((scores > threshold).float().mean()) == pytest.approx(0.05)


def test_detection_rates_on_a_hand_made_example():
    success = torch.tensor([True, True, True, False, False])
    flagged = torch.tensor([True, False, False, True, False])
    r = adv.detection_rates(success, flagged)
    assert r == {"success": pytest.approx(3 / 5), "detect": pytest.approx(1 / 3), "undetected": pytest.approx(2 / 5)}
    detector = adv.GlobalReconstruction(threshold=1.0)
    assert detector.flag(torch.tensor([0.5, 1.0, 1.5])).tolist() == [False, False, True]
    assert math.isnan(adv.detection_rates(torch.zeros(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool))["detect"])


def test_deflection_counts_undetected_successes_judged_as_target():
    judge = torch.tensor([4, 4, 2, 4, 4])
    target = torch.tensor([4, 4, 4, 4, 1])
    success = torch.tensor([True, True, True, True, False])
    flagged = torch.tensor([False, False, False, True, False])
    assert adv.deflection_rate(judge, target, success, flagged) == pytest.approx(2 / 3)


def test_auroc_sanity():
    clean, attacked = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.6])
    assert adv.detection_auroc(clean, attacked) == pytest.approx(1.0)
    assert adv.detection_auroc(attacked, clean) == pytest.approx(0.0)
    assert adv.detection_auroc(torch.ones(4), torch.ones(4)) == pytest.approx(0.5)


def test_local_error_is_the_worst_patch():
    x, r = torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 6, 6)
    x[0, 0, 1, 1], x[0, 0, 2, 2], x[0, 0, 5, 5] = 0.3, 0.4, 0.45
    assert float(adv.local_error(x, r, 2)) == pytest.approx(0.5)  # the window over (1,1) and (2,2)
    assert float(adv.local_error(x, r, 1)) == pytest.approx(0.45)  # patch 1: the largest pixel error
    assert float(adv.global_error(x, r)) == pytest.approx((0.09 + 0.16 + 0.2025) ** 0.5)


def test_cycle_consistency_scores_the_reconstruction_against_the_prediction(model, test_batch):
    x, _ = test_batch
    with torch.no_grad():
        scores, recon = model.scores_and_reconstruction(x)
        expected = model.class_loss(model.scores_and_reconstruction(recon)[0], scores.argmax(1))
        assert torch.allclose(adv.CycleConsistency().score(model, x), expected)


def test_detection_report(model, fixture_data, tmp_path, capsys):
    judge = nn.Sequential(nn.Flatten(), model.classifier)  # the attacked classifier itself: every success deflects
    out = adv.detection_report(model, fixture_data, tmp_path, judge=judge,
                               attacks=("fgsm", "pgd", "reconstructive", "defence_aware"), eps=0.3, steps=5,
                               detector_weights=(1.0,), num_examples=40, name="linear")
    m = out["metrics"]
    for a in ("fgsm", "pgd", "reconstructive", "defence_aware"):
        for key in ("success", "detect", "undetected", "auroc", "detect_local", "detect_cycle", "detect_any"):
            assert 0 <= m[f"{a}_{key}"] <= 1, (a, key)
        assert m[f"{a}_undetected"] <= m[f"{a}_success"]
        assert m.get(f"{a}_deflect", 1.0) == 1.0 and (f"{a}_deflect" in m) == (m[f"{a}_undetected"] > 0)
    assert m["reconstructive_undetected"] > m["pgd_undetected"]
    assert m["pgd_success"] > 0.8
    assert m["threshold"] == float(model.detection_threshold)
    assert 0.05 - 3 / 40 <= m["fpr_any"] <= 0.05 + 1e-6 < m["fpr_any_separate"] <= 0.15 + 1e-6
    assert m["reconstructive_weight"] == 1.0 and "pgd_weight" not in m
    assert 0.5 < m["clean_acc"] <= 1
    table = next(iter(out["tables"].values()))
    assert "| linear |" in table and table.count("\n") == 5
    for name, path in out["figures"].items():
        assert path.parent == tmp_path and path.name == name and path.read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.count("detection report:") == 4
    again = adv.detection_report(model, fixture_data, tmp_path, attacks=("pgd",), eps=0.3, steps=5, num_examples=40)
    assert again["metrics"]["pgd_success"] == m["pgd_success"] and "pgd_deflect" not in again["metrics"]


def test_detection_report_keeps_the_strongest_detector_weight_and_its_own_settings(model, fixture_data, tmp_path):
    kw = {"eps": 0.3, "steps": 5, "num_examples": 40}
    each = {w: adv.detection_report(model, fixture_data, tmp_path, attacks=("reconstructive",), detector_weights=(w,),
                                    **kw)["metrics"]["reconstructive_undetected"] for w in (0.0, 5.0)}
    out = adv.detection_report(model, fixture_data, tmp_path, detector_weights=(0.0, 5.0), **kw,
                               attacks=("reconstructive", "pgd", "pgd_untargeted", "pgd_40_untargeted"))
    m = out["metrics"]
    assert m["reconstructive_undetected"] == max(each.values())
    assert m["reconstructive_weight"] == max(each, key=each.get)
    assert any("weight sweep" in title for title in out["tables"])
    assert m["pgd_40_untargeted_success"] >= m["pgd_untargeted_success"] >= m["pgd_success"]


def test_attacks_run_under_inference_mode(model, test_batch):
    x, y = test_batch
    expected = adv.fgsm(model, x, y, EPS)
    with torch.inference_mode():
        got = adv.fgsm(model, x.clone(), y, EPS)
    assert torch.equal(got, expected)


def test_unknown_attacks_are_refused(model, test_batch, fixture_data, tmp_path):
    x, y = test_batch
    with pytest.raises(ValueError, match="unknown attack"):
        adv.attack(model, x, y, "carlini_wagner")
    with pytest.raises(ValueError, match="unknown attacks"):
        adv.detection_report(model, fixture_data, tmp_path, attacks=("pgd", "cw"))
