"""Subclass distillation: the auxiliary loss and the class marginal by hand, the student's objectives, the 2x5
datamodule, overfitting a batch, `zoo fit` (one process and DDP on two), the release round trip and the analysis."""
import math

import pytest
import torch
import torch.nn.functional as F


import zoo
from zoo.models.subclass_distillation import SubclassStudent, SuperclassIDXDataModule
from zoo.models.subclass_distillation.model import (
    auxiliary_loss, class_logits, contingency, normalized_logits, one_to_one_mapping, recovery_accuracy, student_loss,
)

# ----------------------------------------------------------------------------- math


def test_auxiliary_loss_by_hand():
    # Rows standardised by hand: v1 = [1,-1,1,-1]/2, v2 = [1,-1,-1,1]/2, v3 = [-1,-1,-1,3]/(2√3), so that
    # v1·v2 = 0, v1·v3 = -1/√3, v2·v3 = 1/√3 and every v_i·v_i = 1.
    z = torch.tensor([[1.0, -1.0, 1.0, -1.0], [2.0, -2.0, -2.0, 2.0], [0.0, 0.0, 0.0, 4.0]], dtype=torch.float64)
    r = 1 / math.sqrt(3)
    sims = [[1, 0, -r], [0, 1, r], [-r, r, 1]]
    for T in (1.0, 0.5):
        want = sum(math.log(sum(math.exp(s / T) for s in row)) - 1 / T for row in sims) / 3
        assert auxiliary_loss(z, T, eps=0.0).item() == pytest.approx(want, abs=1e-12)
    v = normalized_logits(z, eps=0.0)
    assert torch.allclose(v @ v.T, torch.tensor(sims, dtype=torch.float64), atol=1e-12)
    # each example's logits may be shifted and scaled freely: only their pattern counts
    moved = z * torch.tensor([[3.0], [0.5], [2.0]], dtype=torch.float64) + torch.tensor([[7.0], [-1.0], [0.3]])
    same = auxiliary_loss(z, 0.5, eps=0.0).item()
    assert auxiliary_loss(moved, 0.5, eps=0.0).item() == pytest.approx(same, abs=1e-10)
    # the authors' code computes mean_i logsumexp_j(v_i·v_j / T) − 1/T − log n: the same loss less log n
    sim = v @ v.T / 0.5
    assert (sim.logsumexp(-1).mean() - 2.0 - math.log(3)).item() == pytest.approx(
        auxiliary_loss(z, 0.5, eps=0.0).item() - math.log(3), abs=1e-12)


def test_auxiliary_loss_rewards_using_many_subclasses():
    torch.manual_seed(0)
    spread = torch.eye(10)[torch.arange(40) % 10] * 6.0  # examples spread over all ten subclasses
    collapsed = torch.eye(10)[torch.arange(40) % 2] * 6.0  # every example in one of two subclasses
    assert auxiliary_loss(spread) < auxiliary_loss(collapsed) - 0.5


def test_class_probability_is_the_sum_of_its_subclass_probabilities():
    torch.manual_seed(0)
    z = torch.randn(6, 2 * 5, dtype=torch.float64) * 3
    p = F.softmax(z, -1)
    want = torch.stack([p[:, :5].sum(-1), p[:, 5:].sum(-1)], -1)
    assert torch.allclose(F.softmax(class_logits(z, 2), -1), want, atol=1e-12)
    assert torch.allclose(F.softmax(class_logits(z, 5), -1), p.view(6, 5, 2).sum(-1), atol=1e-12)


def test_student_objectives():
    torch.manual_seed(0)
    t, y = torch.randn(8, 10), torch.randint(0, 2, (8,))
    s_sub, s_cls = torch.randn(8, 10), torch.randn(8, 2)
    T, a = 4.0, 0.3
    q, p = F.softmax(t / T, -1), F.softmax(t, -1)  # the teacher's subclass distribution at T and at 1
    soft = -(q * F.log_softmax(s_sub / T, -1)).sum(-1).mean() * T * T
    hard = F.cross_entropy(torch.stack([s_sub[:, :5].logsumexp(-1), s_sub[:, 5:].logsumexp(-1)], -1), y)
    assert torch.allclose(student_loss(s_sub, t, y, 2, "subclass", T, a), a * soft + (1 - a) * hard)
    # conventional: the teacher's class logits (log of its summed subclass probabilities) softened at T
    q_cls = F.softmax(torch.log(torch.stack([p[:, :5].sum(-1), p[:, 5:].sum(-1)], -1)) / T, -1)
    soft = -(q_cls * F.log_softmax(s_cls / T, -1)).sum(-1).mean() * T * T
    want = a * soft + (1 - a) * F.cross_entropy(s_cls, y)
    assert torch.allclose(student_loss(s_cls, t, y, 2, "class", T, a), want, atol=1e-6)
    assert torch.allclose(student_loss(s_cls, None, y, 2, "labels", T, a), F.cross_entropy(s_cls, y))
    with pytest.raises(ValueError):
        student_loss(s_cls, t, y, 2, "logits", T, a)


def test_recovery_mapping_by_hand():
    assigned, labels = torch.tensor([0, 0, 1, 1, 2, 2, 2]), torch.tensor([1, 1, 0, 0, 2, 2, 0])
    counts = contingency(assigned, labels, 3, 3)
    assert counts.tolist() == [[0, 2, 0], [2, 0, 0], [1, 0, 2]]
    mapping = one_to_one_mapping(counts)
    assert mapping.tolist() == [1, 0, 2]
    assert recovery_accuracy(assigned, labels, mapping) == pytest.approx(6 / 7)


# ----------------------------------------------------------------------------- data and modules


def test_superclass_datamodule_keeps_the_original_labels(idx_dir):
    dm = SuperclassIDXDataModule(data_dir=str(idx_dir), val_size=40, batch_size=16)
    dm.setup()
    for split in (dm.train_set, dm.val_set, dm.test_set):
        assert torch.equal(split.labels, split.fine_labels // 5) and split.fine_labels.max() > 4
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (16, 1, 28, 28) and torch.equal(y, dm.test_set.fine_labels[:16] // 5)
    assert dm.num_classes == 2 and dm.classes[1].startswith("Sandal") and dm.fine_classes[6] == "Shirt"
    with pytest.raises(ValueError):
        SuperclassIDXDataModule(subclasses=3)


@pytest.fixture(scope="module")
def teacher_release(tmp_path_factory):
    torch.manual_seed(0)
    teacher = zoo.create("subclass_teacher", channels=[4, 8], hidden=[16])
    return zoo.save_pretrained(teacher, tmp_path_factory.mktemp("teacher") / "release")


def test_shapes_and_losses_of_teacher_and_student(teacher_release):
    torch.manual_seed(0)
    teacher = zoo.load(teacher_release)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 2, (8,))
    z = teacher.subclass_logits(x)
    assert z.shape == (8, 10) and torch.allclose(teacher(x), class_logits(z, 2))
    teacher.log_dict = lambda *a, **k: None
    teacher.eval()  # no dropout, so the loss can be recomputed
    want = F.cross_entropy(class_logits(z, 2), y) + auxiliary_loss(z, 1.0)
    assert torch.allclose(teacher.loss(x, y), want)
    student = zoo.create("subclass_student", hidden=[16], teacher=str(teacher_release), alpha=0.3)
    assert student(x).shape == (8, 2) and student.subclass_logits(x).shape == (8, 10)
    with torch.no_grad():
        want = student_loss(student.subclass_logits(x), z, y, 2, "subclass", 4.0, 0.3)
        assert torch.allclose(student.training_step((x, y), 0), want)
    assert all(k.startswith("net.") for k in student.state_dict())  # the teacher is not part of the student
    conventional = zoo.create("subclass_student", hidden=[16], teacher=str(teacher_release), target="class")
    assert conventional(x).shape == (8, 2) and conventional.net.head.out_features == 2
    with pytest.raises(ValueError):
        conventional.subclass_logits(x)
    wrong = zoo.create("subclass_student", hidden=[16], teacher=str(teacher_release), subclasses=2)
    with pytest.raises(ValueError, match="subclasses"):
        wrong.training_step((x, y), 0)


def test_teacher_overfits_a_batch_using_most_subclasses(idx_dir):
    dm = SuperclassIDXDataModule(data_dir=str(idx_dir), val_size=40)
    dm.setup()
    x, y = dm.train_set.__getitems__(list(range(64)))
    torch.manual_seed(0)
    teacher = zoo.create("subclass_teacher", channels=[], hidden=[64], dropout=0.0)  # no conv blocks: fast
    teacher.log_dict = lambda *a, **k: None
    opt = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    with torch.no_grad():
        aux_before = auxiliary_loss(teacher.subclass_logits(x)).item()
    for _ in range(100):
        opt.zero_grad()
        teacher.loss(x, y).backward()
        opt.step()
    with torch.no_grad():
        assert (teacher(x).argmax(1) == y).all()
        z = teacher.subclass_logits(x)
        assert auxiliary_loss(z).item() < aux_before - 0.5
        assert len(z.argmax(1).unique()) >= 6  # 64 images spread over most of the ten subclasses


def test_release_round_trip_is_bit_exact(teacher_release, tmp_path):
    teacher = zoo.load(teacher_release)
    torch.manual_seed(3)
    student = zoo.create("subclass_student", hidden=[16], teacher=str(teacher_release))
    folder = zoo.save_pretrained(student, tmp_path / "student")
    again = zoo.load(folder)
    assert again.hparams.target == "subclass" and again._teacher is None
    x = torch.rand(5, 1, 28, 28)
    for a, b in ((student.eval(), again), (teacher, zoo.load(teacher_release))):
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
        assert torch.equal(a(x), b(x))


# ----------------------------------------------------------------------------- analysis


def _oracle(dm, subclass_of_fine):
    """subclass logits that look each image up in the dataset and answer `subclass_of_fine[its original class]`."""
    sets = (dm.train_set, dm.val_set, dm.test_set)
    images = torch.cat([s.images.flatten(1).float() / s.scale for s in sets])
    fine = torch.cat([s.fine_labels for s in sets])

    def subclass_logits(x):
        hit = torch.cdist(x.flatten(1), images).argmin(1)
        return F.one_hot(subclass_of_fine[fine[hit]], 10).float() * 5

    return subclass_logits


def test_teacher_analysis_scores_subclasses_against_the_original_classes(idx_dir, tmp_path):
    from zoo.models.subclass_distillation.module import subclass_recovery

    dm = SuperclassIDXDataModule(data_dir=str(idx_dir), val_size=100)
    dm.setup()
    teacher = zoo.create("subclass_teacher", channels=[4], hidden=[8])
    present = len(dm.test_set.fine_labels.unique())
    teacher.subclass_logits = _oracle(dm, (torch.arange(10) + 3) % 5 + 5 * (torch.arange(10) // 5))  # permuted
    out = teacher.analyse(tmp_path, dm)
    m = out["metrics"]
    assert m["test/subclass_acc"] == pytest.approx(1.0) and m["test/subclass_nmi"] == pytest.approx(1.0)
    assert m["test/subclasses_used"] == present
    assert (tmp_path / "teacher_subclasses.png").is_file() and "teacher_subclasses.png" in out["figures"]
    table = next(iter(out["tables"].values()))
    assert "| 0.3 | T-shirt/top |" in table  # subclass 3 of class 0 answers for original class 0
    teacher.subclass_logits = _oracle(dm, torch.zeros(10, dtype=torch.long))  # collapsed onto one subclass
    m = subclass_recovery(teacher, None, dm, "teacher")["metrics"]
    val_counts = torch.bincount(dm.val_set.fine_labels)  # the mapping is chosen on validation: its commonest class
    tops = (val_counts == val_counts.max()).nonzero().flatten()
    assert m["test/subclasses_used"] == 1.0
    assert any(m["test/subclass_acc"] == pytest.approx(float((dm.test_set.fine_labels == c).float().mean()))
               for c in tops)
    assert m["test/subclass_nmi"] == pytest.approx(0.0, abs=1e-9)


def test_student_analysis_runs_the_limited_transfer_experiment(teacher_release, idx_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(SubclassStudent, "transfer_sizes", (20, 60, 10**6))
    monkeypatch.setattr(SubclassStudent, "transfer_steps", 5)
    dm = SuperclassIDXDataModule(data_dir=str(idx_dir), val_size=40)
    dm.setup()
    torch.manual_seed(0)
    student = zoo.create("subclass_student", hidden=[16], teacher=str(teacher_release))
    out = student.analyse(tmp_path, dm)
    m = out["metrics"]
    sweep = {k for k in m if "transfer" in k}
    assert sweep == {f"test/acc_transfer{n}_{t}" for n in (20, 60) for t in ("subclass", "class", "labels")}
    assert {"test/subclass_acc", "test/subclass_nmi", "test/subclasses_used"} <= set(m)
    assert all(0.0 <= v <= 1.0 for k, v in m.items() if "acc" in k)
    # one run redone by hand: the same seed gives the same student and the same accuracy
    order = torch.randperm(len(dm.train_set), generator=torch.Generator().manual_seed(dm.seed))[:60]
    x, y = dm.train_set.__getitems__(order.tolist())
    net = student._train_fresh(x.flatten(1), y, student.teacher_subclass_logits(x), "class")
    xt, yt = dm.test_set.__getitems__(list(range(len(dm.test_set))))
    with torch.no_grad():
        acc = (net(xt.flatten(1)).argmax(1) == yt).float().mean().item()
    assert acc == pytest.approx(m["test/acc_transfer60_class"])
    assert {"transfer_sweep.png", "student_subclasses.png"} <= set(out["figures"])
    assert "| 20 |" in out["tables"]["Student test accuracy with a limited transfer set"]
    conventional = zoo.create("subclass_student", hidden=[16], teacher=str(teacher_release), target="class")
    assert conventional.analyse(tmp_path, dm) == {}
