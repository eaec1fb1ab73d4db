"""Forward-Forward, the rest of the paper: training throughput of the unsupervised and local-receptive-field
entries and their backprop twins, and the two routes of zoo.nn.local.LocallyConnected2d, in one process.

    python benchmarks/forward_forward.py [--steps 100] [--repeats 3]

1. The locally connected layer, forward and backward on a batch of 200 (an FF step's positive and negative
   halves) at the recipes' sizes: the dense route (filters scattered into the connection matrix, one matmul)
   against the textbook unfold + einsum route, and the ratio.
2. Training steps/s of each recipe's model in a plain PyTorch loop over its own DataModule (Fashion-MNIST
   needs its IDX files), the FF entries beside their same-shape backprop twins.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from _plain import plain_parts
from zoo._lightning_cli import ZooCLI
from zoo._paths import resolve_recipe
from zoo.nn.local import LocallyConnected2d

RECIPES = ["fmnist_unsupervised", "fmnist_unsupervised_backprop", "fmnist_localrf", "fmnist_localrf_backprop"]
LAYERS = {  # (in_channels, out_channels, image size, kernel): the FMNIST recipe's, the MNIST and CIFAR-10 configs'
    "fmnist_localrf 1->1 x 28x28, 11x11": (1, 1, 28, 11),
    "mnist_localrf 3->3 x 28x28, 11x11": (3, 3, 28, 11),
    "cifar10_localrf 3->3 x 32x32, 11x11": (3, 3, 32, 11),
}


def _timed(fn, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return steps / (time.perf_counter() - start)


def layer_rates(name: str, steps: int) -> tuple[float, float]:
    """Forward + backward iterations/s of one layer size by the dense and the unfold route."""
    ci, co, size, k = LAYERS[name]
    rates = []
    for impl in ("dense", "unfold"):
        torch.manual_seed(0)
        layer = LocallyConnected2d(ci, co, size, k, padding=k // 2, impl=impl)
        x = torch.rand(200, ci, size, size)

        def step():
            layer.zero_grad(set_to_none=True)
            layer(x).pow(2).mean().backward()

        rates.append(_timed(step, steps))
    return rates[0], rates[1]


def recipe_steps_per_s(recipe: str, steps: int) -> float:
    argv, sys.argv = sys.argv, ["zoo"]
    try:
        cli = ZooCLI(args=["--config", str(resolve_recipe(f"configs/forward_forward/{recipe}.yaml")),
                           "--trainer.logger=false"], run=False, save_config_callback=None)
    finally:
        sys.argv = argv
    model, dm, opt = plain_parts(cli)
    batches = iter(dm.train_dataloader())

    def step():
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = model.local_losses(x, y)[0] if hasattr(model, "local_losses") else model.loss(x, y)
        loss.backward()
        opt.step()

    return _timed(step, steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {a.repeats}")
    print("LocallyConnected2d, forward + backward, batch 200      dense it/s  unfold it/s  dense/unfold")
    for name in LAYERS:
        runs = [layer_rates(name, max(a.steps // 10, 5)) for _ in range(a.repeats)]
        d, u = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"  {name:<50} {d:10.2f} {u:12.2f} {d / u:12.1f}", flush=True)
    print("training steps/s (batch 100), plain loop over the recipe's model and data")
    for recipe in RECIPES:
        rate = statistics.median(recipe_steps_per_s(recipe, a.steps) for _ in range(a.repeats))
        print(f"  {recipe:<50} {rate:8.2f} steps/s  {100 * rate:9.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
