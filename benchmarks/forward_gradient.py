"""Forward-gradient training throughput: steps per second of the LocalMixer of a recipe trained by local
activity-perturbed forward gradients (LG-FG-A, one JVP per block), by local weight perturbation (LG-FG-W) and by
backprop (the BP twin), in the same process on the same Fashion-MNIST batches, with the ratio to backprop.

    python benchmarks/forward_gradient.py [--recipe configs/forward_gradient/fmnist.yaml] [--steps 100]
                                          [--repeats 3] [--device cpu|cuda] [--threads N]

Each step is what `LocalMixerClassifier.training_step` does: the gradient (estimate) into `.grad`, one SGD step.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import yaml

import zoo
from zoo._paths import resolve_recipe
from zoo.data import IDXDataModule
from zoo.models.forward_gradient import forward_gradients, true_gradients


def steps_per_s(step: Callable[[torch.Tensor, torch.Tensor], None], batches: list, steps: int, warmup: int,
                device: torch.device) -> float:
    for i in range(warmup):
        step(*batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        step(*batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="configs/forward_gradient/fmnist.yaml")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = yaml.safe_load(open(resolve_recipe(args.recipe)))
    init = {**cfg["model"]["init_args"], "mode": "fg_activity", "local": True}
    data = cfg["data"]["init_args"]
    dm = IDXDataModule(data.get("dataset", "fashion-mnist"), data_dir=args.data_dir, batch_size=data["batch_size"],
                       val_size=data["val_size"], seed=data["seed"])
    dm.prepare_data()
    dm.setup("fit")
    batches = []
    for x, y in dm.train_dataloader():
        batches.append((x.to(device), y.to(device)))
        if len(batches) == 20:
            break

    module = zoo.create("localmixer", **init).to(device)
    net = module.net
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    gen = torch.Generator(device=device).manual_seed(0)

    def make(kind: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            x = module.normalise(x)
            if kind == "bp":
                grads = true_gradients(net, x, y, local=False)
            else:
                grads = forward_gradients(net, x, y, "activity" if kind == "lg_fg_a" else "weight", True, gen)[0]
            for k, p in net.named_parameters():
                p.grad = grads.get(k)
            opt.step()
        return step

    names = {"lg_fg_a": "LG-FG-A (local activity-perturbed FG)", "lg_fg_w": "LG-FG-W (local weight-perturbed FG)",
             "bp": "BP (end-to-end backprop)"}
    rates = {k: [] for k in names}
    for _ in range(args.repeats):
        for k in names:
            rates[k].append(steps_per_s(make(k), batches, args.steps, args.warmup, device))
    params = sum(p.numel() for p in net.parameters())
    print(f"{args.recipe}: LocalMixer {params:,} parameters, batch {data['batch_size']}, device {device}, "
          f"threads {torch.get_num_threads()}, median of {args.repeats} x {args.steps} steps")
    bp = statistics.median(rates["bp"])
    for k, label in names.items():
        r = statistics.median(rates[k])
        print(f"  {label:40s} {r:8.1f} steps/s   ({r / bp:.2f}x backprop)")


if __name__ == "__main__":
    main()
