"""`zoo reproduce`: trains the recipe, tests, compares, releases; the release is exactly the measured model;
numbers repeat on CPU; a metric outside tolerance is flagged; a killed run leaves no release."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import REPO, run_zoo

import zoo
from zoo.data import DigitsDataModule

NAME = "forward-forward-digits"
FAST = ["--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"]


def test_reproduce_release_catalogue_and_determinism(catalog_copy, zoo_home):
    env = {"ZOO_CATALOG": str(catalog_copy), "ZOO_HOME": str(zoo_home)}
    out = run_zoo("reproduce", NAME, "--update-catalog", *FAST, env=env)
    assert "first its baseline, forward-forward-digits-backprop" in out.stdout
    assert "measured" in out.stdout and "catalogue" in out.stdout
    assert "the paper's claims" in out.stdout and "ff-supervised-near-backprop-digits" in out.stdout

    rel = zoo_home / "releases" / NAME
    assert {"model.safetensors", "config.json", "config.yaml", "metrics.json", "README.md", "claims.json",
            "receptive_fields.png", "goodness_by_label.png"} <= {p.name for p in rel.iterdir()}
    claims = {c["id"]: c for c in json.loads((rel / "claims.json").read_text())}
    assert set(claims["ff-supervised-near-backprop-digits"]["values"]) == {
        "forward-forward-digits:test/acc", "forward-forward-digits-backprop:test/acc"}
    assert (zoo_home / "releases" / "forward-forward-digits-backprop" / "model.safetensors").is_file()
    measured = json.loads((rel / "metrics.json").read_text())
    entry = yaml.safe_load(catalog_copy.read_text())["checkpoints"][NAME]
    assert entry["metrics"] == measured and set(measured) == {"test/acc", "test/acc_linear"}
    assert entry["reproduced"]["command"] == f"zoo reproduce {NAME} " + " ".join(FAST)
    # the whole command (the baseline trained first, the analysis) takes longer than the main fit alone
    assert entry["reproduced"]["total_time_s"] > entry["reproduced"]["wall_time_s"]
    # the entry alone, as `reproduce --all` plans it: more than its fit (test, analysis), less than the whole
    assert entry["reproduced"]["wall_time_s"] < entry["reproduced"]["own_time_s"] < entry["reproduced"]["total_time_s"]
    card = (rel / "README.md").read_text()
    assert "baseline: forward-forward-digits-backprop" in card and "![receptive_fields.png]" in card

    # the released weights are the measured model: recomputing the test accuracy gives the same number
    model = zoo.load(NAME)
    assert entry["num_params"] == sum(p.numel() for p in model.parameters())
    dm = DigitsDataModule(**entry["data"]["init_args"])
    dm.setup()
    x, y = dm.test_set.__getitems__(list(range(len(dm.test_set))))
    with torch.no_grad():
        assert abs((model(x).argmax(1) == y).float().mean().item() - measured["test/acc"]) < 1e-6

    # a second run on the same CPU gives the same numbers; a catalogue value far away is flagged (exit 3)
    doc = yaml.safe_load(catalog_copy.read_text())
    doc["checkpoints"][NAME]["metrics"]["test/acc"] = measured["test/acc"] - 0.5
    catalog_copy.write_text(yaml.safe_dump(doc))
    again = run_zoo("reproduce", NAME, "--no-baseline", *FAST, env=env, check=False)
    assert again.returncode == 3 and "OUTSIDE" in again.stdout
    assert json.loads((rel / "metrics.json").read_text()) == measured


def test_killed_reproduce_leaves_no_release(catalog_copy, zoo_home):
    env = {**os.environ, "ZOO_CATALOG": str(catalog_copy), "ZOO_HOME": str(zoo_home), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "reproduce", NAME, "--no-baseline",
                             "--trainer.max_epochs=50", "--trainer.enable_progress_bar=false"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = zoo_home / "runs" / NAME
    deadline = time.time() + 120
    while not list(runs.glob("*/checkpoints/last.ckpt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert list(runs.glob("*/checkpoints/last.ckpt")), "training had not started when the run was killed"
    assert not list(zoo_home.glob("releases/**/model.safetensors"))
    with pytest.raises(zoo.CheckpointNotAvailable, match=f"zoo reproduce {NAME}"):
        zoo.load(NAME)  # the fixtures point ZOO_CATALOG and ZOO_HOME of this process at the same places


class _Trained(Exception):
    pass


@pytest.mark.parametrize("with_baseline, first", [(True, "mfa-digits"), (False, "grbm-digits")])
def test_a_baseline_brings_its_own_comparison_first(zoo_home, monkeypatch, with_baseline, first):
    """grbm-digits is compared with dmfa-digits, whose analysis compares it with mfa-digits: reproduced as a
    baseline with nothing at hand, dmfa-digits must first make mfa-digits, or --update-catalog would write it
    without the metrics its claims use. --no-baseline on the entry itself trains only the entry."""
    from zoo import _reproduce

    trained = []

    def record(entry, overrides):
        trained.append(entry.name)
        raise _Trained

    monkeypatch.setattr(_reproduce, "train_and_test", record)
    with pytest.raises(_Trained):
        _reproduce.reproduce("grbm-digits", with_baseline=with_baseline, echo=lambda *a: None)
    assert trained == [first]


def test_an_interrupted_run_resumes_from_its_checkpoint(catalog_copy, zoo_home):
    env = {"ZOO_CATALOG": str(catalog_copy), "ZOO_HOME": str(zoo_home)}
    assert run_zoo("reproduce", NAME, "--no-baseline", *FAST, env=env, check=False).returncode in (0, 3)  # 2 epochs
    measured = json.loads((zoo_home / "releases" / NAME / "metrics.json").read_text())
    ckpt = next((zoo_home / "runs" / NAME).glob("*/**/*.ckpt"))
    out = run_zoo("reproduce", NAME, "--no-baseline", "--update-catalog", *FAST, f"--ckpt_path={ckpt}", env=env,
                  check=False)
    assert out.returncode in (0, 3), out.stderr[-2000:]
    assert json.loads((zoo_home / "releases" / NAME / "metrics.json").read_text()) == measured  # the same weights
    entry = yaml.safe_load(catalog_copy.read_text())["checkpoints"][NAME]
    assert entry["reproduced"]["resumed_from"] == str(ckpt) and entry["metrics"] == measured
    bad = run_zoo("reproduce", NAME, "--no-baseline", *FAST, "--ckpt_path=/nowhere.ckpt", env=env, check=False)
    assert bad.returncode != 0 and "no such checkpoint" in bad.stdout + bad.stderr
