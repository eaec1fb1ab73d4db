"""The spine as a new user meets it: run folders per recipe, one-line errors (wrong resume checkpoint, weights
that do not exist, misspelt config keys), a `zoo list` that fits a terminal, and per-epoch lines in logs."""
import os
import sys

import pytest
from conftest import REPO, global_state_restored, run_zoo

from zoo import _catalog
from zoo._lightning_cli import ZooCLI, run_name
from zoo.cli import main

DIGITS = str(REPO / "configs/forward_forward/digits.yaml")
TINY = ["--trainer.logger=false", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1", "--data.init_args.batch_size=20"]


@pytest.fixture
def in_process(tmp_path, monkeypatch, zoo_home):
    """Run `zoo.cli.main` here, in an empty working folder, and put back what a Trainer changes globally."""
    with global_state_restored():
        os.chdir(tmp_path)
        sys.argv = ["zoo"]  # LightningCLI warns when both sys.argv and args carry options
        yield tmp_path


def test_run_folder_is_named_after_the_recipe():
    assert run_name(["configs/forward_forward/fmnist.yaml", "configs/strategies/ddp.yaml"], None) == "forward_forward/fmnist"
    assert run_name([str(REPO / "zoo/_resources/configs/lookahead/fmnist.yaml")], None) == "lookahead/fmnist"
    assert run_name(["/somewhere/my_recipe.yaml"], None) == "my_recipe"
    assert run_name([], "zoo.models.forward_forward.ForwardForward") == "forward_forward"


def test_each_recipe_has_its_own_run_folder_and_a_wrong_resume_is_one_line(in_process, capsys):
    assert main(["fit", "--config", DIGITS, "--model.init_args.hidden=[8, 8]", *TINY]) == 0
    last = in_process / "runs/forward_forward/digits/checkpoints/last.ckpt"
    assert last.is_file()
    out = capsys.readouterr().out
    assert "epoch 1/1  step 2  " in out and "train/loss " in out and "val/acc " in out  # no TTY: one line per epoch
    assert "Epoch 0:" not in out  # and no progress bar

    other = ZooCLI(args=["--config", str(REPO / "configs/forward_forward/digits_backprop.yaml"), *TINY], run=False)
    assert other.trainer.default_root_dir == os.path.join("runs", "forward_forward", "digits_backprop")

    assert main(["fit", "--config", DIGITS, "--model.init_args.hidden=[16, 16]", *TINY, "--ckpt_path", "last"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("zoo fit:")]
    assert len(err) == 1 and str(last) in err[0]
    assert "ForwardForward(hidden=[8, 8])" in err[0] and "ForwardForward(hidden=[16, 16])" in err[0]


def test_missing_weights_give_the_same_line_as_zoo_download(in_process, capsys):
    assert main(["download", "forward-forward-digits"]) == 2
    download = capsys.readouterr().err.strip().removeprefix("zoo download: ")
    assert main(["fit", "--config", DIGITS, "--model.init_args.weights=forward-forward-digits", *TINY]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"zoo fit: {download}\n" in err
    assert "zoo reproduce forward-forward-digits" in download
    assert not (in_process / "runs").exists()


def test_misspelt_config_key_names_the_file_and_the_key(in_process, capsys):
    bad = in_process / "bad.yaml"
    bad.write_text((REPO / "configs/forward_forward/digits.yaml").read_text().replace("max_epochs:", "max_epoch:"))
    for args, line in ((["--config", str(bad)], f"{bad}: unknown key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)"),
                       (["--config", DIGITS, "--model.init_args.hiden=[3]"],
                        "unknown option --model.init_args.hiden (did you mean --model.init_args.hidden?)")):
        with pytest.raises(SystemExit) as stop:
            main(["fit", *args, "--print_config"])
        assert stop.value.code == 2 and capsys.readouterr().err == f"zoo fit: {line}\n"


def test_zoo_list_fits_a_terminal_and_full_keeps_every_metric(zoo_home, capsys):
    """Default columns: name, dataset, where the weights are, headline metric (Entry.headline, as in README)."""
    (zoo_home / "releases/forward-forward-digits").mkdir(parents=True)
    (zoo_home / "releases/forward-forward-digits/model.safetensors").write_bytes(b"")
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "dataset", "weights", "headline", "metric"]
    assert len(lines) == len(_catalog.names()) + 1 and max(map(len, lines)) <= 110
    entry = _catalog.get("forward-forward-digits")
    row = next(ln for ln in lines if ln.startswith("forward-forward-digits "))
    assert row.split() == ["forward-forward-digits", entry.dataset, "local", entry.headline()]
    assert main(["list", "--full", "forward-forward-digits"]) == 0
    full = capsys.readouterr().out
    assert all(f"{k}={v:.4f}" in full for k, v in entry.metrics.items())


def test_cli_errors_are_one_line_from_the_shell(tmp_path):
    out = run_zoo("fit", "--config", DIGITS, "--model.init_args.weights=no-such-release", check=False, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert lines[-1] == "zoo fit: unknown checkpoint 'no-such-release'. See `zoo list` for all names." and len(lines) <= 3
