"""The `zoo` command: LightningCLI subcommands on fixture data (in this process: what is tested is the CLI, not
spawning it), catalogue commands and `--help` through the installed entry point, and bad input."""
import subprocess
import sys

import pytest
from conftest import REPO, run_zoo, zoo_in_process

from zoo.cli import main


def in_process_exit(capsys, *args: str) -> tuple[int, str, str]:
    """Run `zoo ARGS` that end by exiting (--print_config, --model.help, a refused config) in this process:
    (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        zoo_in_process(*args)
    out = capsys.readouterr()
    return stop.value.code or 0, out.out, out.err


def test_main_runs_fit_fast_dev_run_on_fixture_idx_files(idx_dir, tmp_path, caplog, monkeypatch):
    """`zoo.cli.main` hands fit to LightningCLI (every record's recipes run fast_dev_run in test_checklist)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    assert main(["fit", "--config", "configs/forward_forward/fmnist.yaml", f"--data.init_args.data_dir={idx_dir}",
                 "--data.init_args.val_size=40", "--trainer.fast_dev_run=2", f"--trainer.default_root_dir={tmp_path}",
                 "--trainer.enable_progress_bar=false", "--trainer.logger=false"]) == 0
    assert "Running in `fast_dev_run` mode" in caplog.text and "`Trainer.fit` stopped" in caplog.text


def test_strategy_overlays_stack_on_a_recipe(capsys):
    code, out, _ = in_process_exit(capsys, "fit", "--config", "configs/forward_forward/digits.yaml", "--config",
                                   "configs/strategies/ddp.yaml", "--trainer.devices=1", "--print_config")
    assert code == 0 and "strategy: ddp" in out and "class_path: zoo.models.forward_forward.ForwardForward" in out
    code, out, _ = in_process_exit(capsys, "fit", "--config", "configs/forward_forward/mnist.yaml", "--config",
                                   "configs/strategies/fsdp.yaml", "--print_config")
    assert code == 0 and "class_path: lightning.pytorch.strategies.FSDPStrategy" in out
    assert "sharding_strategy: FULL_SHARD" in out and "hidden:\n    - 2000" in out


def test_test_subcommand_starts_from_zoo_weights(tmp_path):
    import torch

    import zoo

    torch.manual_seed(0)
    module = zoo.create("forward_forward", **zoo.info("forward-forward-digits").init_args)
    folder = zoo.save_pretrained(module, tmp_path / "release")
    cli = zoo_in_process("test", "--config", "configs/forward_forward/digits.yaml", f"--model.init_args.weights={folder}",
                         "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                         f"--trainer.default_root_dir={tmp_path}")
    assert "test/acc" in cli.trainer.callback_metrics
    for k, v in module.state_dict().items():
        assert torch.equal(cli.model.state_dict()[k], v), k  # the test ran the release's weights


def test_short_class_names_and_model_help(capsys):
    code, out, _ = in_process_exit(capsys, "fit", "--model=ForwardForward", "--data=DigitsDataModule",
                                   "--model.hidden=[8,8]", "--print_config")
    assert code == 0 and "ForwardForward" in out and "hidden:\n    - 8\n    - 8" in out
    code, help_text, _ = in_process_exit(capsys, "fit", "--model.help", "ForwardForward")
    assert code == 0 and "--model.peer_norm" in help_text and "--model.weights" in help_text


def test_config_with_unknown_key_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "configs/forward_forward/digits.yaml").read_text().replace("peer_norm:", "peer_nrom:"))
    code, _, err = in_process_exit(capsys, "fit", "--config", str(bad), "--print_config")
    assert code != 0 and "peer_nrom" in err


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
