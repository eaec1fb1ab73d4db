"""Bit Diffusion sampling speed: images per second of Algorithm 2 (DDIM or DDPM, self-conditioning, the time
difference td) through `BitDiffusionModule.sample`, against the bare denoiser passes the sampler cannot avoid
(the same batch, the same number of steps, nothing else), in the same process.

    python benchmarks/bit_diffusion.py [--recipe configs/bit_diffusion/fmnist.yaml] [--batch 250] [--steps 100]
                                       [--sampler ddim] [--repeats 3] [--device cpu] [--threads N]

Prints images/s of each and the ratio sampler/bare (1.0: the sampler's own arithmetic, analog-bit decoding and
self-conditioning bookkeeping cost nothing next to the network). The model is the recipe's, at its initial weights
(speed does not depend on training).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml

from zoo._paths import resolve_recipe
from zoo.models.bit_diffusion import BitDiffusionModule


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="configs/bit_diffusion/fmnist.yaml")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--td", type=float, default=0.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    args = yaml.safe_load(resolve_recipe(a.recipe).read_text())["model"]["init_args"]
    torch.manual_seed(0)
    module = BitDiffusionModule(**{**args, "fid_features": None}).to(a.device).eval()
    model, net = module.model, module.ema
    c, h, w = model.image_shape
    inp = torch.randn(a.batch, model.channels * (2 if model.self_condition else 1), h, w, device=a.device)
    gamma = torch.rand(a.batch, device=a.device)

    @torch.no_grad()
    def bare():
        for _ in range(a.steps):
            net(inp, gamma)

    def sampler():
        module.sample(a.batch, a.steps, a.td, a.sampler, batch=a.batch)

    sampler()  # warm-up: allocator, kernels
    s_times, b_times = [], []
    for _ in range(a.repeats):  # interleaved, so drift in machine load hits both alike
        s_times.append(_timed(sampler))
        b_times.append(_timed(bare))
    s, b = statistics.median(s_times), statistics.median(b_times)
    n_params = sum(q.numel() for q in net.parameters())
    print(f"recipe {a.recipe}: {n_params / 1e6:.2f} M parameters, batch {a.batch}, {a.sampler.upper()} {a.steps} steps, "
          f"td {a.td:g}, {a.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, median of {a.repeats}")
    print(f"bare denoiser passes      {a.batch / b:8.2f} images/s")
    print(f"Algorithm 2 (sample)      {a.batch / s:8.2f} images/s   ratio {b / s:.3f}")


if __name__ == "__main__":
    main()
