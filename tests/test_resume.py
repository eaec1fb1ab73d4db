"""Resume: a `zoo fit` killed with SIGKILL and rerun with `--ckpt_path last` ends with exactly the weights of
an uninterrupted run (shuffling and negative labels are functions of seed, epoch and step)."""
import os
import signal
import subprocess
import sys
import time

import torch
from conftest import REPO, run_zoo, zoo_in_process

ARGS = ["fit", "--config", "configs/forward_forward/digits.yaml", "--model.init_args.hidden=[64, 64]",
        "--trainer.max_epochs=6", "--trainer.enable_progress_bar=false", "--trainer.logger=false"]


def final_state(root) -> dict:
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 5
    return ckpt["state_dict"]


def test_sigkill_then_ckpt_path_last_matches_uninterrupted_run(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    zoo_in_process(*ARGS, f"--trainer.default_root_dir={ref}")  # only the killed run needs its own process

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", *ARGS, f"--trainer.default_root_dir={killed}"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    interrupted_at = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert interrupted_at < 5

    out = run_zoo(*ARGS, f"--trainer.default_root_dir={killed}", "--ckpt_path", "last")
    assert "Restoring states from the checkpoint" in out.stderr + out.stdout
    a, b = final_state(ref), final_state(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
