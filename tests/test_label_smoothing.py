"""When Does Label Smoothing Help? (paper 25): the smoothed loss against its formula, the template plane on a
hand-made example, the plane coordinates against the logits, temperature scaling and γ on hand-made outputs, the
analysis on fixture data, and the recipe through `zoo fit` (one process and DDP) and a release round trip."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import image_batch, round_trip

import zoo
from zoo.models.label_smoothing.model import (
    equivalent_smoothing, fit_temperature, project_onto_plane, template_plane, with_bias,
)


def small(**kw):
    torch.manual_seed(0)
    return zoo.create("label_smoothing_mlp", hidden=[32, 16], **kw)


def test_loss_is_cross_entropy_with_smoothed_targets():
    x, y = image_batch()
    m = small(alpha=0.2)
    with torch.no_grad():
        logp = F.log_softmax(m(x), dim=1)
        targets = F.one_hot(y, 10) * (1 - 0.2) + 0.2 / 10  # y(1 − α) + α/K
        assert targets.sum(1).allclose(torch.ones(12))
        assert m.loss(x, y).item() == pytest.approx(-(targets * logp).sum(1).mean().item(), rel=1e-6)
        assert small(alpha=0.0).loss(x, y).item() == pytest.approx(F.cross_entropy(m(x), y).item(), rel=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        small(alpha=1.0)


def test_template_plane_hand_example():
    w = torch.tensor([[1.0, 2.0, 0.0, 0.0], [1.0, 2.0, 3.0, 0.0], [1.0, 2.0, 1.0, 4.0]])
    origin, basis = template_plane(w)
    assert torch.allclose(basis @ basis.T, torch.eye(2), atol=1e-6)  # orthonormal
    want = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 4.0]])
    assert torch.allclose(project_onto_plane(w, origin, basis), want, atol=1e-6)
    off_plane = w[0] + torch.tensor([0.0, 5.0, 2.0, -1.0])  # the second axis is orthogonal to the plane
    assert torch.allclose(project_onto_plane(off_plane[None], origin, basis), torch.tensor([[2.0, -1.0]]), atol=1e-6)
    with pytest.raises(ValueError, match="collinear"):
        template_plane(torch.stack([w[0], w[1], 2 * w[1] - w[0]]))


def test_plane_coordinates_carry_the_logit_differences_of_the_three_classes():
    x, _ = image_batch()
    m = small()
    triple = (2, 7, 4)
    c = m.plane_coordinates(x, triple).double()  # [N, 2]
    with torch.no_grad():
        z = m(x).double()[:, list(triple)]
        w = m.templates()[list(triple)].double()
        origin, basis = template_plane(w)
        assert torch.allclose(with_bias(m.penultimate(x)).double() @ w.T, z, atol=1e-5)
    # x̃ = w₀ + Bᵀc + n with n ⟂ plane, so z_k − z₀ = w₀·(w_k − w₀) + c·B(w_k − w₀)
    t = project_onto_plane(w, origin, basis)
    want = (w - w[0]) @ w[0] + c @ t.T
    assert torch.allclose(z - z[:, :1], want, atol=1e-4)
    assert c.std(0).min() > 0  # the examples do not collapse to one point


def test_temperature_scaling_recovers_the_overconfidence_factor():
    # each input appears 4 times with labels drawn exactly in proportion to softmax(base): calibrated at T = 1
    base = torch.tensor([[math.log(3.0), 0.0, 0.0], [0.0, math.log(2.0), math.log(2.0)]])
    logits = 3.0 * base.repeat_interleave(5, dim=0)  # three times too confident
    p = F.softmax(base, dim=1)
    assert p[0].tolist() == pytest.approx([0.6, 0.2, 0.2]) and p[1].tolist() == pytest.approx([0.2, 0.4, 0.4])
    labels = torch.tensor([0, 0, 0, 1, 2, 1, 1, 2, 2, 0])
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=1e-4)
    assert F.cross_entropy(logits / t, labels) < F.cross_entropy(logits, labels) - 0.1


def test_equivalent_smoothing():
    y = torch.tensor([0, 3, 1, 1])
    smooth = F.one_hot(y, 5) * 0.8 + 0.2 / 5
    assert equivalent_smoothing(smooth.log(), y) == pytest.approx(0.2)
    assert equivalent_smoothing(100.0 * F.one_hot(y, 5).float(), y) == pytest.approx(0.0, abs=1e-12)
    assert equivalent_smoothing(torch.zeros(4, 5), y) == pytest.approx(1.0)  # uniform outputs
    assert equivalent_smoothing(smooth.log(), y, temperature=4.0) > 0.2  # a higher T softens


def test_overfits_one_batch():
    x, y = image_batch()
    m = small(alpha=0.1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        m.loss(x, y).backward()
        opt.step()
    with torch.no_grad():
        p = F.softmax(m(x), dim=1)
    assert (p.argmax(1) == y).all()
    assert p.max(1).values.max() < 0.95  # smoothing keeps the winner near 1 − α + α/K = 0.91


def test_analysis_on_fixture_data(fixture_data, tmp_path):
    m = small(alpha=0.1, student_hidden=[16], student_epochs=2)
    x, y = fixture_data.train_set.__getitems__(list(range(len(fixture_data.train_set))))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        m.loss(x, y).backward()
        opt.step()
    out = m.analyse(tmp_path, fixture_data)
    metrics = out["metrics"]
    assert set(out["figures"]) == {"plane_dissimilar.png", "plane_similar.png"}
    assert all(p.stat().st_size > 5000 for p in out["figures"].values())
    assert set(out["tables"]) == {"Calibration (§3)", "Distillation (§4)"}
    xv, yv = fixture_data.val_set.__getitems__(list(range(len(fixture_data.val_set))))
    xt, yt = fixture_data.test_set.__getitems__(list(range(len(fixture_data.test_set))))
    with torch.no_grad():
        zv, zt, zx = m(xv), m(xt), m(x)
    t = metrics["temperature"]
    assert t == pytest.approx(fit_temperature(zv, yv), rel=1e-6)
    assert "test/nll" not in metrics  # the same number as test/loss
    assert f"| {F.cross_entropy(zt, yt).item():.4f} |" in out["tables"]["Calibration (§3)"]
    assert metrics["test/nll_temp_scaled"] == pytest.approx(F.cross_entropy(zt / t, yt).item(), rel=1e-5)
    assert 0.0 <= metrics["test/ece_temp_scaled"] <= 1.0 and 0.0 < metrics["test/ece"] <= 1.0
    assert metrics["train/teacher_gamma"] == pytest.approx(equivalent_smoothing(zx, y, 4.0), rel=1e-6)
    for k in ("test/acc_student_alone", "test/acc_student_distilled"):
        assert 0.0 <= metrics[k] <= 1.0
    assert "| trained alone on the labels |" in out["tables"]["Distillation (§4)"]



def test_release_round_trip_is_bit_exact(tmp_path):
    back = round_trip(small(alpha=0.05, distill_temperature=2.0), tmp_path, image_batch()[0])
    assert back.hparams.alpha == 0.05 and back.hparams.distill_temperature == 2.0
