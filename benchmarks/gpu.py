"""The reference table on a GPU, in one call: every benchmarks/run.py row on CUDA, Forward-Forward with bf16
autocast beside float32, and 2-process DDP training throughput of the Forward-Forward recipe model.

    python benchmarks/gpu.py --ref capsnet=PATH --ref grbm=PATH --ref ff=PATH --ref cka=PATH [--repeats 5]
                             [--write docs/benchmarks.md]

Prepared for a lent GPU machine and not run on the 2-core CPU machine where it was written. The references'
checkouts must be on that machine: unpack them under the repository's git-ignored `.refs/` (`.refs/ff`,
`.refs/capsnet`, `.refs/grbm`, `.refs/cka`, `.refs/moe`, `.refs/canonical_capsules`) and carry that folder with the
command, then pass `--ref ff=.refs/ff` and so on; rows whose reference is missing are skipped, as in run.py. CKA's reference is NumPy, so its rows time our CUDA path against the notebook on the CPU. DDP: two
processes (NCCL, one GPU each) train the fmnist FF model on disjoint batches of 100 with gradients all-reduced;
images/s of both together against one process alone. It needs two GPUs (NCCL refuses two ranks on one device);
with one it says so and skips the row.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def ddp_worker(rank: int, world: int, steps: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import zoo

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    model = zoo.create("forward_forward").cuda().train()
    opt = model.configure_optimizers()
    ddp = DistributedDataParallel(model, device_ids=[rank])
    g = torch.Generator(device="cuda").manual_seed(rank)
    x = torch.rand(100, 784, device="cuda", generator=g)
    y = torch.randint(0, 10, (100,), device="cuda", generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        _ddp_loss(ddp, x, y).backward()  # through DDP's forward, so it all-reduces the gradients
        opt.step()

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    rate = torch.tensor([100 * steps / (time.perf_counter() - start)], device="cuda")
    dist.all_reduce(rate)
    if rank == 0:
        Path(out).write_text(f"{rate.item():.0f}")
    dist.destroy_process_group()


def _ddp_loss(ddp, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The model's loss called through DDP's forward, so its gradient hooks fire (the module's `forward` is
    the test-time goodness rule; `local_losses` is swapped in for the call)."""
    module = ddp.module
    forward = module.forward
    module.forward = lambda a, b: module.local_losses(a, b)[0]
    try:
        return ddp(x, y)
    finally:
        module.forward = forward


def ddp_rows(steps: int = 200) -> list[str]:
    if torch.cuda.device_count() < 2:
        return [f"- DDP: skipped, {torch.cuda.device_count()} GPU(s) here; two ranks need two GPUs under NCCL"]
    import tempfile

    import torch.multiprocessing as mp

    rates = {}
    for world in (1, 2):
        with tempfile.NamedTemporaryFile(suffix=".txt") as f:
            mp.spawn(ddp_worker, args=(world, steps, 29500 + world, f.name), nprocs=world, join=True)
            rates[world] = float(Path(f.name).read_text())
    return [f"- DDP, Forward-Forward fmnist model, batch 100 per rank, {steps} steps: 1 process "
            f"{rates[1]:.0f} images/s, 2 processes {rates[2]:.0f} images/s ({rates[2] / rates[1]:.2f}x)"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", action="append", default=[], metavar="KEY=PATH")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--write", type=Path, default=None)
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this script is for a GPU machine (benchmarks/run.py is the CPU table)")
    cmd = [sys.executable, str(HERE / "run.py"), "--device", "cuda", "--variants", "bf16",
           "--repeats", str(a.repeats), *[f"--ref={r}" for r in a.ref]]
    table = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout  # progress, errors: stderr
    text = table.rstrip("\n") + "\n" + "\n".join(ddp_rows()) + "\n"
    print(text)
    if a.write:
        sys.path.insert(0, str(HERE))
        from run import write_section

        write_section(a.write, text, "gpu")


if __name__ == "__main__":
    main()
