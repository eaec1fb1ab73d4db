"""SimCLRv2 (arXiv 2006.10029): class-balanced label fractions, fine-tuning from the projection head's first
layer of a pre-trained SimCLR network (loaded strictly), distillation to the teacher's soft labels without the
labels, learning one batch, the release round trip."""
import pytest
import torch
from conftest import round_trip

import zoo
from zoo._hub import WeightsMismatchError
from zoo.data.views import labelled_subset
from zoo.losses import distillation_loss
from zoo.models.simclr import SimCLR
from zoo.models.simclrv2 import SimCLRv2Distill, SimCLRv2FineTune

SMALL = dict(in_chans=1, depth=18, width=0.125, cifar_stem=True, num_classes=3)


def test_labelled_subset_is_class_balanced_seeded_and_refuses_empty_classes():
    order = torch.randperm(180, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0] * 100 + [1] * 50 + [2] * 30)[order]
    keep = labelled_subset(labels, 0.1, seed=0)
    assert torch.bincount(labels[keep]).tolist() == [10, 5, 3] and torch.equal(keep, keep.sort().values)
    assert torch.equal(keep, labelled_subset(labels, 0.1, seed=0))
    assert not torch.equal(keep, labelled_subset(labels, 0.1, seed=1))
    assert len(labelled_subset(labels, 1.0, seed=0)) == 180
    with pytest.raises(ValueError, match=r"class\(es\) \[2\]"):
        labelled_subset(labels, 0.012, seed=0)  # 1.2, 0.6 and 0.36 images round to 1, 1 and 0
    with pytest.raises(ValueError, match="0 < fraction"):
        labelled_subset(labels, 0.0, seed=0)


def _pretrained(tmp_path, head_layers=3):
    torch.manual_seed(0)
    simclr = SimCLR(**SMALL, head_layers=head_layers)
    with torch.no_grad():
        for p in simclr.parameters():
            p.add_(torch.randn_like(p))  # not the initialisation a fresh network would repeat
    return simclr, zoo.save_pretrained(simclr, tmp_path / "pretrained")


def test_fine_tuning_keeps_the_heads_first_layers_and_loads_them_strictly(tmp_path):
    """ft_proj_selector 1 of 3 keeps the head's first dense, batch norm and ReLU, copied from the SimCLR release
    with the encoder; the supervised head starts at zero; selector 0 keeps no head layer; a release of another
    shape is refused naming the weights."""
    simclr, path = _pretrained(tmp_path)
    tuned = SimCLRv2FineTune(**SMALL, ft_proj_selector=1, pretrained=str(path))
    assert tuned.net.f.conv1.weight.abs().sum() != simclr.net.f.conv1.weight.abs().sum()  # copied at setup
    tuned.setup("fit")
    src = simclr.state_dict()
    own = tuned.state_dict()
    assert [type(m).__name__ for m in tuned.net.g.net] == ["Linear", "BatchNorm1d", "ReLU"]
    assert all(torch.equal(own[k], src[k]) for k in own if not k.startswith("net.classifier"))
    assert len([k for k in own if k.startswith("net.f.")]) == len([k for k in src if k.startswith("net.f.")])
    assert tuned.net.classifier.weight.abs().sum() == 0 and tuned.net.classifier.weight.shape == (3, 64)
    x = torch.rand(4, 1, 28, 28)
    assert tuned.eval()(x).shape == (4, 3)
    h = simclr.eval().net.g.net[:3](simclr.net.f(x))
    tuned.net.classifier.weight.data.normal_()
    assert torch.allclose(tuned(x), tuned.net.classifier(h), atol=1e-6)  # logits read the head's first layer
    from_h = SimCLRv2FineTune(**SMALL, ft_proj_selector=0, pretrained=str(path))
    from_h.setup("fit")
    assert len(from_h.net.g.net) == 0 and torch.equal(from_h.net.f.conv1.weight, simclr.net.f.conv1.weight)
    with pytest.raises(WeightsMismatchError, match="wrong shape"):
        SimCLRv2FineTune(**{**SMALL, "width": 0.25}, pretrained=str(path)).setup("fit")
    with pytest.raises(ValueError, match="selector=4"):
        SimCLRv2FineTune(**SMALL, ft_proj_selector=4)
    with pytest.raises(ValueError, match="not both"):
        SimCLRv2FineTune(**SMALL, pretrained=str(path), weights=str(path))


def test_fine_tuning_learns_one_batch_through_the_encoder(monkeypatch, tmp_path):
    _, path = _pretrained(tmp_path)
    tuned = SimCLRv2FineTune(**SMALL, pretrained=str(path), optimizer="adam").train()
    tuned.setup("fit")
    monkeypatch.setattr(tuned, "log", lambda *a, **k: None)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 3, (16,))
    opt = torch.optim.Adam(tuned.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = tuned.training_step(([x, torch.zeros_like(x)], y), 0)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert tuned.net.f.conv1.weight.grad.abs().sum() > 0 and tuned.net.g.net[0].weight.grad.abs().sum() > 0


def test_distillation_is_the_kd_loss_to_the_teacher_without_labels(monkeypatch, tmp_path):
    """The student's loss is τ²·CE(softmax(teacher/τ), softmax(student/τ)) on the same view, whatever the labels;
    the teacher stays out of the student's weights and gets no gradient."""
    torch.manual_seed(0)
    teacher = SimCLRv2FineTune(**SMALL)
    teacher.net.classifier.weight.data.normal_()
    path = zoo.save_pretrained(teacher, tmp_path / "teacher")
    student = SimCLRv2Distill(**{**SMALL, "width": 0.0625}, teacher=str(path), temperature=2.0).train()
    monkeypatch.setattr(student, "log", lambda *a, **k: None)
    x = torch.rand(8, 1, 28, 28)
    torch.manual_seed(1)
    loss = student.training_step(([x, x], torch.zeros(8, dtype=torch.long)), 0)
    with torch.no_grad():
        want_teacher = teacher.eval()(x)
    torch.manual_seed(1)
    other_labels = student.training_step(([x, x], torch.randint(0, 3, (8,))), 0)
    assert torch.equal(loss, other_labels)
    torch.manual_seed(1)
    assert torch.allclose(loss, distillation_loss(student(x), want_teacher, 2.0), atol=1e-6)
    assert not any(k.startswith("_teacher") or "teacher" in k for k in student.state_dict())
    loss.backward()
    assert all(p.grad is None for p in student._teacher.parameters())


def test_release_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    back = round_trip(SimCLRv2FineTune(**SMALL, ft_proj_selector=2), tmp_path / "a", torch.rand(3, 1, 28, 28))
    assert back.hparams.ft_proj_selector == 2 and "pretrained" not in back.hparams
    back = round_trip(SimCLRv2Distill(**SMALL, teacher="not-needed-to-load"), tmp_path / "b", torch.rand(3, 1, 28, 28))
    assert back.hparams.teacher == "not-needed-to-load"


def test_unknown_optimiser_choices_are_refused_when_built():
    with pytest.raises(ValueError, match="choose lars, sgd or adam"):
        SimCLRv2FineTune(**SMALL, optimizer="rmsprop")
    with pytest.raises(ValueError, match="choose lars, sgd or adam"):
        SimCLR(**SMALL, lr_scaling="cubic")
