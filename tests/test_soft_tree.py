"""Soft decision tree (Frosst & Hinton 2017): path probabilities, leaf loss and balance penalty against values
worked out by hand on a depth-2 tree; shapes; one batch learned; the recipes through `zoo fit` (one process
and DDP on two, the distilled tree with a teacher release on fixture data); release round trip; analysis."""
import math

import pytest
import torch
import torch.nn.functional as F


import zoo
from zoo.models.soft_tree import BalancePenalty, SoftDecisionTree, leaf_loss

L3 = math.log(3.0)


def hand_tree() -> SoftDecisionTree:
    """Depth 2 on 2 inputs, β = 2. With x1 = (1, 0) and x2 = (0, 1), β(x·w_i + b_i) is ±ln 3 or 0, so
    p_0 = (3/4, 1/4), p_1 = (1/2, 1/4), p_2 = (3/4, 1/2) for (x1, x2). Leaves hold Q = the rows of Q_HAND."""
    tree = SoftDecisionTree(in_features=2, num_classes=2, depth=2, beta=2.0)
    with torch.no_grad():
        tree.w.copy_(torch.tensor([[L3 / 2, -L3 / 2], [0.0, -L3 / 2], [L3 / 2, 0.0]]))
        tree.b.zero_()
        tree.phi.copy_(Q_HAND.log())
    return tree


Q_HAND = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8], [0.25, 0.75]])
X_HAND = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def test_path_probabilities_by_hand():
    out = hand_tree()(X_HAND)
    assert torch.allclose(out["p"], torch.tensor([[0.75, 0.5, 0.75], [0.25, 0.25, 0.5]]), atol=1e-6)
    # P^i: root 1; left child 1 − p_0; right child p_0
    assert torch.allclose(out["P_inner"], torch.tensor([[1.0, 0.25, 0.75], [1.0, 0.75, 0.25]]), atol=1e-6)
    # leaves left to right: (1−p0)(1−p1), (1−p0)p1, p0(1−p2), p0 p2
    want = torch.tensor([[0.125, 0.125, 0.1875, 0.5625], [0.5625, 0.1875, 0.125, 0.125]])
    assert torch.allclose(out["P_leaf"], want, atol=1e-6)


def test_leaf_loss_predictions_and_penalty_by_hand():
    tree = hand_tree()
    out = tree(X_HAND)
    T = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # x1 is class 1, x2 class 0
    l1 = -(0.125 * math.log(0.5) + 0.125 * math.log(0.1) + 0.1875 * math.log(0.8) + 0.5625 * math.log(0.75))
    l2 = -(0.5625 * math.log(0.5) + 0.1875 * math.log(0.9) + 0.125 * math.log(0.2) + 0.125 * math.log(0.25))
    assert leaf_loss(out["P_leaf"], tree.log_Q(), T).item() == pytest.approx((l1 + l2) / 2, rel=1e-5)
    # the most probable leaf: leaf 3 for x1, leaf 0 for x2; the mixture: Σ_ℓ P^ℓ Q^ℓ
    assert torch.allclose(tree.most_probable_leaf(out["P_leaf"]).exp(), Q_HAND[[3, 0]], atol=1e-6)
    mix = torch.tensor([[0.125 * 0.5 + 0.125 * 0.9 + 0.1875 * 0.2 + 0.5625 * 0.25, 0.0],
                        [0.5625 * 0.5 + 0.1875 * 0.9 + 0.125 * 0.2 + 0.125 * 0.25, 0.0]])
    mix[:, 1] = 1 - mix[:, 0]
    assert torch.allclose(tree.mixture(out["P_leaf"]).exp(), mix, atol=1e-6)
    # α_0 = (3/4 + 1/4)/2 = 1/2; α_1 = (1/4·1/2 + 3/4·1/4)/(1/4 + 3/4) = 5/16;
    # α_2 = (3/4·3/4 + 1/4·1/2)/(3/4 + 1/4) = 11/16
    penalty = BalancePenalty(depth=2, lam=1.0, window=0)
    assert torch.allclose(penalty.alpha(out["p"], out["P_inner"]), torch.tensor([0.5, 5 / 16, 11 / 16]))
    # C = −Σ_i 2^{−d(i)}·½[log α_i + log(1 − α_i)]: the root gives log 2; the two level-1 nodes (weight ½
    # each) have the same pair {5/16, 11/16}, so together −½(log 5/16 + log 11/16)
    want = math.log(2) - 0.5 * (math.log(5 / 16) + math.log(11 / 16))
    assert penalty(out["p"], out["P_inner"]).item() == pytest.approx(want, rel=1e-5)
    assert BalancePenalty(depth=2, lam=0.3, window=0)(out["p"], out["P_inner"]).item() == pytest.approx(0.3 * want,
                                                                                                         rel=1e-5)


def test_running_average_window_doubles_per_level():
    penalty = BalancePenalty(depth=2, lam=1.0, window=1.0)  # γ = 0 at the root, 1 − 1/2 at level 1
    assert torch.allclose(penalty.gamma, torch.tensor([0.0, 0.5, 0.5]))
    p1, P1 = torch.tensor([[0.9, 0.2, 0.6]]), torch.tensor([[1.0, 0.1, 0.9]])
    p2, P2 = torch.tensor([[0.3, 0.7, 0.4]]), torch.tensor([[1.0, 0.7, 0.3]])
    penalty.alpha(p1, P1, update=True)
    a = penalty.alpha(p2, P2)
    assert a[0].item() == pytest.approx(0.3)  # the root: the current batch only
    assert a[1].item() == pytest.approx((0.5 * 0.1 * 0.2 + 0.7 * 0.7) / (0.5 * 0.1 + 0.7))
    assert a[2].item() == pytest.approx((0.5 * 0.9 * 0.6 + 0.3 * 0.4) / (0.5 * 0.9 + 0.3))
    with pytest.raises(ValueError):
        BalancePenalty(depth=2, lam=1.0, window=0.5)


def test_shapes_and_parameter_count():
    m = zoo.create("soft_tree")  # the paper's depth 8: 255 filters of 784 weights, 256 leaves
    assert sum(p.numel() for p in m.parameters()) == 255 * 785 + 1 + 256 * 10
    x = torch.rand(5, 1, 28, 28)
    out = m.tree(x)
    assert out["p"].shape == out["P_inner"].shape == (5, 255) and out["P_leaf"].shape == (5, 256)
    assert torch.allclose(out["P_leaf"].sum(1), torch.ones(5))
    assert m(x).shape == (5, 10) and torch.allclose(m(x).exp().sum(1), torch.ones(5))


def test_learns_one_batch(idx_dir):
    from zoo.data import IDXDataModule

    dm = IDXDataModule("fashion-mnist", data_dir=str(idx_dir), val_size=40, batch_size=32)
    dm.setup("fit")
    x, y = dm.train_set.__getitems__(list(range(32)))
    torch.manual_seed(0)
    m = zoo.create("soft_tree", depth=4, lr=0.03)
    m.log = m.log_dict = lambda *a, **k: None
    opt = m.configure_optimizers()  # Adam alone: no Trainer, so no cooldown schedule
    assert (m(x).argmax(1) == y).float().mean() < 0.5
    for _ in range(100):  # about 35 steps are enough
        opt.zero_grad()
        m.training_step((x, y), 0).backward()
        opt.step()
    assert (m(x).argmax(1) == y).float().mean() == 1.0


def test_distilled_tree_trains_on_the_teachers_soft_targets(teacher_release):
    torch.manual_seed(1)
    m = zoo.create("soft_tree_distilled", depth=3, teacher=str(teacher_release), temperature=2.0, lam=0.0)
    m.log = m.log_dict = lambda *a, **k: None
    assert all(k.startswith("tree.") for k in m.state_dict())  # the teacher is not part of the tree
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    with torch.no_grad():
        T = F.softmax(zoo.load(teacher_release)(x) / 2.0, dim=-1)
        want = leaf_loss(m.tree(x)["P_leaf"], m.tree.log_Q(), T)
        assert torch.allclose(m.training_step((x, y), 0), want)
    assert not any(p.requires_grad for p in m._teacher.parameters())
    assert zoo.create("soft_tree_distilled", **m.zoo_init_args())._teacher is None


@pytest.mark.parametrize("key", ["soft_tree", "soft_tree_distilled"])
def test_release_round_trip_is_bit_exact(key, tmp_path):
    torch.manual_seed(2)
    m = zoo.create(key, depth=3, beta=1.5).eval()
    loaded = zoo.load(zoo.save_pretrained(m, tmp_path / "release"))
    assert type(loaded) is type(m) and loaded.hparams.depth == 3
    for k, v in m.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(m(x), loaded(x))


def test_analyse_and_release_figures(idx_dir, tmp_path):
    from zoo.data import IDXDataModule

    dm = IDXDataModule("fashion-mnist", data_dir=str(idx_dir), val_size=40, batch_size=16)
    dm.setup()
    torch.manual_seed(3)
    m = zoo.create("soft_tree", depth=3, beta=0.7)
    out = m.analyse(tmp_path, dm)
    xt, _ = dm.test_set.__getitems__(list(range(len(dm.test_set))))
    with torch.no_grad():
        P = m.tree(xt)["P_leaf"]
    assert out["metrics"]["beta"] == pytest.approx(0.7)
    assert out["metrics"]["leaves_used"] == P.argmax(1).unique().numel()
    assert out["metrics"]["test/mean_max_path_prob"] == pytest.approx(P.max(1).values.mean().item(), rel=1e-5)
    figures = {**out["figures"], **m.release_figures(tmp_path, dm)}
    assert set(figures) == {"leaf_usage.png", "tree_filters.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in figures.values())
