"""Knowledge distillation: the student's loss by hand, the teacher kept out of the student's weights, and the
recipe through `zoo fit` (one process and DDP on two) with a teacher release on fixture data."""
import pytest
import torch
import torch.nn.functional as F
from conftest import run_zoo

import zoo
from zoo.losses import distillation_loss


@pytest.fixture(scope="module")
def teacher_release(tmp_path_factory):
    torch.manual_seed(0)
    teacher = zoo.create("mlp", in_features=784, hidden=[32], num_classes=10)
    return zoo.save_pretrained(teacher, tmp_path_factory.mktemp("teacher") / "release")


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


def test_fit_and_ddp_through_the_cli(teacher_release, idx_dir, tmp_path):
    common = ["--config", "configs/distillation/fmnist_distilled.yaml", f"--model.init_args.teacher={teacher_release}",
              f"--data.init_args.data_dir={idx_dir}", "--data.init_args.val_size=40",
              "--trainer.enable_progress_bar=false", "--trainer.logger=false"]
    run_zoo("fit", *common, "--trainer.fast_dev_run=2", f"--trainer.default_root_dir={tmp_path / 'one'}")
    run_zoo("fit", *common, "--config", "configs/strategies/ddp.yaml", "--trainer.accelerator=cpu",
            "--trainer.devices=2", "--trainer.max_steps=2", f"--trainer.default_root_dir={tmp_path / 'ddp'}")
    ckpt = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and all(k.startswith("net.") for k in ckpt["state_dict"])
