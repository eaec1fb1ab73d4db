"""Confidence penalty (paper 31): the objective against its formula, the penalty's gradient against the paper's
closed form and its sign, the hinge, the paper's initialisation, the Table 1 comparison on fixture data, and the
recipe through `zoo fit` (one process and DDP) and a release round trip."""
import pytest
import torch
import torch.nn.functional as F
from conftest import image_batch, round_trip

import zoo
from zoo.losses import confidence_penalty
from zoo.models.confidence_penalty.module import COMPARED
from zoo.optim import fit_in_memory


def small(**kw):
    torch.manual_seed(0)
    return zoo.create("confidence_penalty_mlp", hidden=[32, 16], **kw)


def test_objective_is_nll_minus_beta_entropy():
    x, y = image_batch()
    m = small(beta=0.7, init_std=None)
    with torch.no_grad():
        z = m(x)
        p = F.softmax(z, dim=1)
        h = -(p * p.log()).sum(1)
        assert m.loss(x, y).item() == pytest.approx((F.cross_entropy(z, y) - 0.7 * h.mean()).item(), rel=1e-6)
        # the hinge: only entropies below Γ are penalised
        gamma = float(h.median())
        want = F.cross_entropy(z, y) + 0.7 * (gamma - h).clamp_min(0).mean()
        assert small(beta=0.7, hinge=gamma, init_std=None).loss(x, y).item() == pytest.approx(want.item(), rel=1e-6)
        both = small(beta=0.7, label_smoothing=0.1, init_std=None).loss(x, y)
        assert both.item() == pytest.approx((F.cross_entropy(z, y, label_smoothing=0.1) - 0.7 * h.mean()).item())
    with pytest.raises(ValueError, match="beta"):
        small(beta=-1.0)


def test_penalty_gradient_matches_the_paper_and_flattens_the_output():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.5, 0.0, 2.0, 0.0]], requires_grad=True)
    confidence_penalty(z, beta=2.0).backward()
    with torch.no_grad():
        p = F.softmax(z, dim=1)
        h = -(p * p.log()).sum(1, keepdim=True)
        dh_dz = p * (-p.log() - h)  # ∂H/∂z_i = p_i(−log p_i − H), the paper's weighted deviation from the mean
        assert torch.allclose(z.grad, -2.0 * dh_dz / 2, atol=1e-6)  # −β·H averaged over the batch of 2
    top = z.detach().argmax(1)
    assert (z.grad.gather(1, top[:, None]) > 0).all()  # a descent step lowers the winning logit
    assert (z.grad.sum(1).abs() < 1e-6).all()  # and moves no mass overall: softmax is shift-invariant
    step = z.detach() - 0.5 * z.grad
    assert (-(F.softmax(step, 1) * F.log_softmax(step, 1)).sum(1) > h.squeeze(1)).all()  # the entropy rises
    confident = torch.tensor([[5.0, 0.0, 0.0]], requires_grad=True)
    confidence_penalty(confident, beta=1.0, hinge=0.01).backward()  # H ≈ 0.09 > Γ: no penalty, no gradient
    assert torch.equal(confident.grad, torch.zeros(1, 3))


def test_initialisation_is_the_papers():
    m = zoo.create("confidence_penalty_mlp", hidden=[256, 256])
    w = torch.cat([m.net.body[0].weight.flatten(), m.net.body[2].weight.flatten(), m.net.head.weight.flatten()])
    assert w.std().item() == pytest.approx(0.01, rel=0.02) and abs(w.mean().item()) < 1e-4
    assert all(not b.any() for n, b in m.named_parameters() if n.endswith("bias"))
    default = zoo.create("confidence_penalty_mlp", hidden=[256, 256], init_std=None)
    assert default.net.body[0].bias.abs().sum() > 0  # PyTorch's own initialisation


def test_overfits_one_batch():
    x, y = image_batch()
    m = small(beta=0.5)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        m.loss(x, y).backward()
        opt.step()
    with torch.no_grad():
        assert (m(x).argmax(1) == y).all()


def test_fit_in_memory_visits_seeded_permutations():
    x = torch.arange(12.0)[:, None]
    net = torch.nn.Linear(1, 1)
    seen = []
    before = net.weight.detach().clone()
    out = fit_in_memory(net, lambda xb, tb: (seen.append(xb[:, 0].long().tolist()) or net(xb) - tb).pow(2).mean(),
                        x, 2 * x, epochs=2, batch_size=5, lr=1e-3, seed=7)
    orders = [torch.randperm(12, generator=torch.Generator().manual_seed(7 + epoch)) for epoch in (0, 1)]
    want = [b.tolist() for order in orders for b in order.split(5)]
    assert seen == want and [len(b) for b in seen] == [5, 5, 2] * 2
    assert out is net and not net.training and not torch.equal(net.weight, before)


def test_table_one_on_fixture_data(fixture_data, tmp_path):
    m = small(beta=1.0, analysis_seeds=2, analysis_epochs=2)
    assert COMPARED["dropout"]["dropout"] > 0 and COMPARED["label smoothing"]["label_smoothing"] > 0
    assert m.sibling(COMPARED["dropout"]).hparams.dropout == COMPARED["dropout"]["dropout"]
    assert m.sibling(COMPARED["confidence penalty"]).hparams.beta == 1.0
    assert m.sibling(COMPARED["label smoothing"]).hparams.beta == 0.0
    out = m.analyse(tmp_path, fixture_data)
    metrics = out["metrics"]
    for key in ("dropout", "label_smoothing", "confidence_penalty"):
        assert 0.0 <= metrics[f"test/err_{key}"] <= 1.0 and metrics[f"test/err_{key}_std"] >= 0.0
        assert 0.0 < metrics[f"test/entropy_{key}"] <= torch.log(torch.tensor(10.0)).item() + 1e-6
    (title, table), = out["tables"].items()
    assert "2 seeds" in title and "2 epochs" in title
    assert table.count("\n") == 4 and "| confidence penalty |" in table and "1.17 ± 0.06" in table
    torch.manual_seed(123)  # another global random state: every run is seeded on its own
    again = zoo.create("confidence_penalty_mlp", hidden=[32, 16], analysis_seeds=2, analysis_epochs=2)
    assert again.analyse(None, fixture_data)["metrics"] == metrics
    assert small(analysis_seeds=0).analyse(None, fixture_data) == {}



def test_release_round_trip_is_bit_exact(tmp_path):
    back = round_trip(small(beta=0.3, hinge=1.5), tmp_path, image_batch()[0])
    assert back.hparams.beta == 0.3 and back.hparams.hinge == 1.5
