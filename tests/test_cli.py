"""The `zoo` command: LightningCLI subcommands on fixture data, catalogue commands, and bad input."""
import subprocess
import sys

import pytest
from conftest import REPO, run_zoo

FF = "configs/forward_forward/fmnist.yaml"


@pytest.mark.parametrize("recipe", ["configs/forward_forward/fmnist.yaml", "configs/forward_forward/fmnist_backprop.yaml",
                                    "configs/forward_forward/mnist.yaml"])
def test_fit_fast_dev_run_on_fixture_idx_files(recipe, idx_dir, tmp_path):
    out = run_zoo("fit", "--config", recipe, f"--data.init_args.data_dir={idx_dir}", "--data.init_args.val_size=40",
                  "--trainer.fast_dev_run=2", f"--trainer.default_root_dir={tmp_path}",
                  "--trainer.enable_progress_bar=false")
    assert "fast_dev_run" in out.stdout + out.stderr


def test_strategy_overlays_stack_on_a_recipe():
    out = run_zoo("fit", "--config", "configs/forward_forward/digits.yaml", "--config", "configs/strategies/ddp.yaml",
                  "--trainer.devices=1", "--print_config")
    assert "strategy: ddp" in out.stdout and "class_path: zoo.models.forward_forward.ForwardForward" in out.stdout
    out = run_zoo("fit", "--config", "configs/forward_forward/mnist.yaml", "--config", "configs/strategies/fsdp.yaml",
                  "--print_config")
    assert "class_path: lightning.pytorch.strategies.FSDPStrategy" in out.stdout
    assert "sharding_strategy: FULL_SHARD" in out.stdout and "hidden:\n    - 2000" in out.stdout


def test_test_subcommand_starts_from_zoo_weights(tmp_path):
    import torch

    import zoo

    torch.manual_seed(0)
    module = zoo.create("forward_forward", **zoo.info("forward-forward-digits").init_args)
    folder = zoo.save_pretrained(module, tmp_path / "release")
    out = run_zoo("test", "--config", "configs/forward_forward/digits.yaml", f"--model.init_args.weights={folder}",
                  "--trainer.logger=false", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}")
    assert "test/acc" in out.stdout


def test_short_class_names_and_model_help():
    out = run_zoo("fit", "--model=ForwardForward", "--data=DigitsDataModule", "--model.hidden=[8,8]", "--print_config")
    assert "zoo.models.forward_forward.module.ForwardForward" in out.stdout or "ForwardForward" in out.stdout
    assert "hidden:\n    - 8\n    - 8" in out.stdout
    help_text = run_zoo("fit", "--model.help", "ForwardForward").stdout
    assert "--model.peer_norm" in help_text and "--model.weights" in help_text


def test_config_with_unknown_key_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "configs/forward_forward/digits.yaml").read_text().replace("peer_norm:", "peer_nrom:"))
    out = run_zoo("fit", "--config", str(bad), "--print_config", check=False)
    assert out.returncode != 0 and "peer_nrom" in out.stderr


def test_list_and_info():
    out = run_zoo("list", "forward-forward-*")
    assert "forward-forward-digits" in out.stdout and "forward-forward-fmnist" in out.stdout
    assert run_zoo("list", "forward-forward-fmnist*", "--dataset", "fashion-mnist", "--tag", "backprop-baseline",
                   "--names").stdout.split() == ["forward-forward-fmnist-backprop", "forward-forward-fmnist-localrf-backprop",
                                                 "forward-forward-fmnist-unsupervised-backprop"]
    info = run_zoo("info", "forward-forward-digits").stdout
    assert "recipe: configs/forward_forward/digits.yaml" in info and "arxiv: '2212.13345'" in info


def test_unknown_name_exits_2_with_suggestions():
    out = run_zoo("info", "forward-forward-fminst", check=False)
    assert out.returncode == 2 and "Did you mean: forward-forward-fmnist" in out.stderr
    out = run_zoo("download", "nope-nope", check=False)
    assert out.returncode == 2 and "zoo list" in out.stderr


def test_help_lists_every_command():
    out = run_zoo("--help").stdout
    for cmd in ("fit", "validate", "test", "predict", "list", "info", "download", "reproduce", "publish"):
        assert f"  {cmd} " in out
    sub = run_zoo("reproduce", "--help").stdout
    assert sub.startswith("usage: zoo reproduce [-h]") and "Catalogue and weights" not in sub


def test_list_and_info_do_not_import_torch_or_lightning():
    code = ("import sys; from zoo.cli import main; main(['list']); main(['info', 'forward-forward-digits']); "
            "import zoo; zoo.list(); zoo.info('forward-forward-fmnist'); "
            "heavy = [m for m in ('torch', 'lightning', 'huggingface_hub') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO)
