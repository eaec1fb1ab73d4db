"""One rank of the suite's shared DDP launch: conftest's `ddp_runs` starts this file twice (RANK 0 and 1) with the
torchelastic variables set, so Lightning joins the gloo process group made here instead of spawning its own. Each
job is one `zoo fit --config <recipe> --config configs/strategies/ddp.yaml ...` run through ZooCLI in this process;
each rank saves its model's weights before and after fitting, so the tests can check the ranks stayed identical.

Usage: python tests/_ddp_all.py SPEC.json   (SPEC: {"timeout_s": int, "jobs": [{"name", "root", "argv"}]})
"""
import datetime
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=spec["timeout_s"]))

    from zoo._lightning_cli import ZooCLI

    class Probe(ZooCLI):
        def before_fit(self) -> None:
            self.initial = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    for job in spec["jobs"]:
        root = Path(job["root"])
        start = time.perf_counter()
        try:
            cli = Probe(args=["fit", *job["argv"], f"--trainer.default_root_dir={root}"])
            torch.save({"key": type(cli.model).zoo_key, "global_step": cli.trainer.global_step,
                        "initial": cli.initial, "final": cli.model.state_dict(),
                        "seconds": time.perf_counter() - start}, root / f"rank{rank}.pt")
        except Exception:  # noqa: BLE001  (the job's test reports it; the other jobs still run)
            (root / f"rank{rank}.error").write_text(traceback.format_exc())
        dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
