"""`zoo fit` on 2 CPU processes with the DDP overlay: it trains, and validation metrics are reduced over
both ranks (the logged accuracy is the accuracy on the whole validation set, not rank 0's half). The run is the
forward_forward record's "forward_forward-metric-sync" in the suite's shared DDP launch (conftest.ddp_runs)."""
import csv

import torch
from conftest import ddp_result

from zoo.data import IDXDataModule
from zoo.models.forward_forward import ForwardForward


def test_ddp_two_cpu_processes_sync_metrics(ddp_runs, idx_dir):
    run = ddp_result(ddp_runs, "forward_forward-metric-sync")
    rows = list(csv.DictReader(open(run.root / "logs" / "version_0" / "metrics.csv")))
    logged = [r for r in rows if r.get("val/acc")][-1]

    ckpt = run.ckpt
    assert ckpt["global_step"] == 15  # 200 training images / 2 ranks / batch 20 = 5 steps per epoch, 3 epochs
    hp = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    model = ForwardForward(**hp)
    model.load_state_dict(ckpt["state_dict"])
    dm = IDXDataModule("fashion-mnist", data_dir=str(idx_dir), val_size=40)
    dm.setup()
    x, y = dm.val_set.__getitems__(list(range(40)))
    with torch.no_grad():
        model.eval()
        per_example = {"val/acc": model(x).argmax(1) == y, "val/acc_linear": model.linear_logits(x).argmax(1) == y}
    halves_differ = False
    for name, correct in per_example.items():
        correct = correct.float()
        assert abs(float(logged[name]) - correct.mean().item()) < 1e-6, name
        halves_differ |= correct[0::2].mean().item() != correct.mean().item()  # rank 0's DistributedSampler share
    assert halves_differ, "pick a fixture where the ranks differ, or the test proves nothing"
