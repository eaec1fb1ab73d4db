"""Knowledge distillation: the student's loss by hand, the teacher kept out of the student's weights, and the
recipe through `zoo fit` (one process and DDP on two) with a teacher release on fixture data."""
import torch
import torch.nn.functional as F
from conftest import run_zoo

import zoo
from zoo.losses import distillation_loss


def test_student_loss_and_weights(teacher_release):
    torch.manual_seed(1)
    student = zoo.create("distilled_mlp", hidden=[16], teacher=str(teacher_release), temperature=4.0, hard_weight=0.3)
    assert all(k.startswith("net.") for k in student.state_dict())  # the teacher is not part of the student
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    teacher = zoo.load(teacher_release)
    with torch.no_grad():
        want = distillation_loss(student(x), teacher(x), 4.0) + 0.3 * F.cross_entropy(student(x), y)
        assert torch.allclose(student.training_step((x, y), 0), want)
    assert not any(p.requires_grad for p in student._teacher.parameters())
    rebuilt = zoo.create("distilled_mlp", **student.zoo_init_args())  # config.json round trip, teacher not loaded
    assert rebuilt._teacher is None



def _kl_to_teacher(student, teacher, x, t: float) -> float:
    with torch.no_grad():
        return F.kl_div(F.log_softmax(student(x) / t, 1), F.softmax(teacher(x) / t, 1), reduction="batchmean").item()


def test_student_fits_one_batch_of_soft_targets(teacher_release, idx_dir):
    from zoo.data import IDXDataModule

    dm = IDXDataModule("fashion-mnist", data_dir=str(idx_dir), val_size=40, batch_size=32)
    dm.setup()
    x, y = dm.train_set.__getitems__(list(range(32)))
    torch.manual_seed(0)
    student = zoo.create("distilled_mlp", hidden=[64], teacher=str(teacher_release), temperature=2.0, hard_weight=0.0)
    teacher = zoo.load(teacher_release)
    before = _kl_to_teacher(student, teacher, x, 2.0)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        student.training_step((x, y), 0).backward()
        opt.step()
    assert _kl_to_teacher(student, teacher, x, 2.0) < 0.05 * before  # the soft targets, not the labels, are fitted


def test_release_round_trip_is_bit_exact(teacher_release, tmp_path):
    torch.manual_seed(2)
    student = zoo.create("distilled_mlp", hidden=[16], teacher=str(teacher_release), omit_class=3)
    loaded = zoo.load(zoo.save_pretrained(student, tmp_path / "release"))
    assert loaded._teacher is None  # the release holds the student only; the teacher is named, not stored
    s, t = student.state_dict(), loaded.state_dict()
    assert s.keys() == t.keys() and all(torch.equal(s[k], t[k]) for k in s)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(student.eval()(x), loaded(x))


def test_omitted_class_never_reaches_the_student(teacher_release):
    student = zoo.create("distilled_mlp", hidden=[16], teacher=str(teacher_release), omit_class=3)
    x, y = torch.rand(6, 1, 28, 28), torch.tensor([3, 1, 3, 2, 3, 0])
    seen = []
    student.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    student.training_step((x, y), 0)
    assert len(seen) == 1 and torch.equal(seen[0], x[y != 3])
    assert student.training_step((x[y == 3], y[y == 3]), 0) is None  # nothing left: the step is skipped


def test_bias_correction_is_chosen_on_validation_and_measured_on_test(teacher_release, idx_dir):
    from zoo.data import IDXDataModule

    dm = IDXDataModule("fashion-mnist", data_dir=str(idx_dir), val_size=120, batch_size=32)  # enough 3s to choose by
    dm.setup()
    torch.manual_seed(0)
    student = zoo.create("distilled_mlp", hidden=[32], teacher=str(teacher_release), omit_class=3)
    xs, ys = dm.train_set.__getitems__(list(range(len(dm.train_set))))
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(150):  # a student that knows every class of the fixture well
        opt.zero_grad()
        F.cross_entropy(student(xs), ys).backward()
        opt.step()
    with torch.no_grad():
        student.net.head.bias[3] -= 8.0  # what a transfer set without class 3 does: its logit far too low
    out = student.analyse(None, dm)
    m = out["metrics"]
    assert m["test/acc_omitted_class"] == 0.0
    assert 0.0 < m["bias_shift"] <= 10.0 and m["test/acc_omitted_class_bias_corrected"] > 0.5
    xt, yt = dm.test_set.__getitems__(list(range(len(dm.test_set))))
    with torch.no_grad():
        logits = student(xt)
        logits[:, 3] += m["bias_shift"]
    pred = logits.argmax(1)
    assert abs((pred == yt).float().mean().item() - m["test/acc_bias_corrected"]) < 1e-6
    assert abs((pred[yt == 3] == 3).float().mean().item() - m["test/acc_omitted_class_bias_corrected"]) < 1e-6
    assert "Transfer set without class 3" in next(iter(out["tables"]))


def test_reproduce_runs_the_analysis_into_release_and_catalogue(teacher_release, idx_dir, catalog_copy, zoo_home):
    import json

    import yaml

    import shutil

    name = "kd-fmnist-distilled-omit3"
    shutil.copytree(teacher_release, zoo_home / "releases" / "kd-fmnist-teacher")  # so `requires` is satisfied
    env = {"ZOO_CATALOG": str(catalog_copy), "ZOO_HOME": str(zoo_home)}
    out = run_zoo("reproduce", name, "--update-catalog", "--no-baseline", "--trainer.max_epochs=1",
                  "--trainer.enable_progress_bar=false", "--model.init_args.hidden=[16]",
                  f"--model.init_args.teacher={teacher_release}", f"--data.init_args.data_dir={idx_dir}",
                  "--data.init_args.val_size=40", env=env)
    assert "Transfer set without class 3 (Dress)" in out.stdout
    measured = json.loads((zoo_home / "releases" / name / "metrics.json").read_text())
    assert {"test/acc", "bias_shift", "test/acc_omitted_class_bias_corrected"} <= set(measured)
    assert yaml.safe_load(catalog_copy.read_text())["checkpoints"][name]["metrics"] == measured
    card = (zoo_home / "releases" / name / "README.md").read_text()
    assert "### Transfer set without class 3 (Dress)" in card and "chosen on validation" in card
