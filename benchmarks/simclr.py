"""SimCLR's input pipeline against its training step: are the augmentations the bottleneck?

    python benchmarks/simclr.py [--recipe configs/simclr/fmnist.yaml] [--batches 20] [--workers 0 2]

Builds the recipe's model and DataModule (Fashion-MNIST needs its IDX files), then measures in one process:
- images/s of the training loader alone (two views drawn per image by torchvision's transforms v2, collated), for
  each worker count given;
- images/s of training steps alone (both views through the network, NT-Xent, the probe, backward, LARS step) on
  batches drawn beforehand.
A ratio of pipeline to step above 1 means the augmentations keep up with training on this machine.
Steps/s through `zoo fit` against a plain loop: benchmarks/overhead.py --recipe configs/simclr/fmnist.yaml.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from _plain import plain_parts
from zoo._lightning_cli import ZooCLI
from zoo._paths import resolve_recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="configs/simclr/fmnist.yaml")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    a, overrides = p.parse_known_args()
    argv, sys.argv = sys.argv, ["zoo"]
    try:
        cli = ZooCLI(args=["--config", str(resolve_recipe(a.recipe)), "--trainer.logger=false", *overrides],
                     run=False, save_config_callback=None)
    finally:
        sys.argv = argv
    model, dm, opt, _ = plain_parts(cli, with_scheduler=True)
    B = dm.batch_size
    print(f"recipe {a.recipe}, batch {B}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for workers in a.workers:
        dm.num_workers = workers
        loader = iter(dm.train_dataloader())
        next(loader)  # start the workers
        start = time.perf_counter()
        for _ in range(a.batches):
            next(loader)
        rate = a.batches * B / (time.perf_counter() - start)
        print(f"input pipeline, {workers} worker(s)        {rate:9.0f} images/s")
    dm.num_workers = 0
    loader = iter(dm.train_dataloader())
    batches = [next(loader) for _ in range(min(a.batches, 10) + 2)]
    loss_fn = lambda batch: model.training_step(batch, 0)  # noqa: E731
    model.log = lambda *args, **kwargs: None  # no trainer attached: logging is not what is timed
    for batch in batches[:2]:
        opt.zero_grad(set_to_none=True)
        loss_fn(batch).backward()
        opt.step()
    start = time.perf_counter()
    for batch in batches[2:]:
        opt.zero_grad(set_to_none=True)
        loss_fn(batch).backward()
        opt.step()
    step_rate = (len(batches) - 2) * B / (time.perf_counter() - start)
    print(f"training steps alone                 {step_rate:9.0f} images/s")
    print(f"pipeline / step, {a.workers[-1]} worker(s)           {rate / step_rate:9.2f}x")


if __name__ == "__main__":
    main()
