"""CapsNet training throughput: ours (zoo "capsnet", fused dynamic routing) against gram-ai/capsule-networks, a
widely used PyTorch port, on the same architecture (256-channel 9 x 9 conv, 32 x 8-D primary capsules, 10 x 16-D
class capsules, 3 routing iterations, 512-1024-784 decoder), batch, data, optimiser (Adam) and device, in one
process. The reference is imported at run time from a checkout of its repository; nothing of it is in the zoo.

    git clone https://github.com/gram-ai/capsule-networks /tmp/ref-capsule-networks   # or any copy of it
    python benchmarks/capsnet.py /tmp/ref-capsule-networks [--batch-size 100] [--steps 5] [--repeats 3]

Prints training images/s (forward, margin + reconstruction loss, backward, Adam step) of each, interleaved so
that drifting machine load hits both alike, and the ratio. Uses Fashion-MNIST training images (IDX files;
`--data-dir` if they are not in a standard place). The port was written for torch 0.3 and CUDA: it calls
`Variable(...).cuda()` inside `forward` without importing Variable; we give its module a `Variable` whose
`.cuda()` moves the tensor to the benchmark device, and lay its class capsules out batch-major so that a
`.view` that newer torch refuses on the transposed tensor works. (It also runs the routing softmax over the
input capsules, not over the parents as the paper does; the amount of work is the same.)
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

import zoo
from _compare import Row
from zoo._runtime import keep_freed_memory
from zoo.data import IDXDataModule

REF, OURS, CONVS, ENCODER = ("gram-ai/capsule-networks", "zoo capsnet", "convolutions only",
                             "convolutions + routing")


def load_reference(checkout: Path, device: torch.device):
    """gram-ai's capsule_network.py as a module (its `__main__` block, the training script, is not run)."""
    path = checkout / "capsule_network.py"
    if not path.is_file():
        sys.exit(f"{path} not found: pass the folder of a gram-ai/capsule-networks checkout")
    spec = importlib.util.spec_from_file_location("gram_ai_capsule_network", path)
    module = importlib.util.module_from_spec(spec)
    limit = sys.getrecursionlimit()
    spec.loader.exec_module(module)
    sys.setrecursionlimit(limit)  # the script raises it to 15000 for its own reasons

    class OnDevice:  # torch 0.3's Variable(t).cuda(), moved to our device instead
        def __init__(self, tensor: torch.Tensor):
            self.tensor = tensor

        def cuda(self) -> torch.Tensor:
            return self.tensor.to(device)

    module.Variable = OnDevice
    return module


def reference_step(model, loss_fn, opt):
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        onehot = F.one_hot(y, 10).float()
        classes, recon = model(x, onehot)
        loss = loss_fn(x, onehot, classes, recon)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def ours_step(model, opt):
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = model.loss(x, y)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def images_per_s(step, batches: list[tuple[torch.Tensor, torch.Tensor]], warmup: int) -> float:
    for x, y in batches[:warmup]:
        step(x, y)
    if batches[0][0].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for x, y in batches[warmup:]:
        step(x, y)
    if batches[0][0].is_cuda:
        torch.cuda.synchronize()
    return sum(len(y) for _, y in batches[warmup:]) / (time.perf_counter() - start)


def compare(reference: Path, batch_size: int = 100, steps: int = 5, warmup: int = 1, repeats: int = 3,
            device: str | None = None, data_dir: str | None = None) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Training images/s of each side per repeat (interleaved), and each side's parameter count."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    warnings.filterwarnings("ignore", message="size_average and reduce args will be deprecated")
    dm = IDXDataModule("fashion-mnist", data_dir=data_dir, batch_size=batch_size, val_size=0)
    dm.prepare_data()
    dm.setup()
    n = batch_size * (warmup + steps)
    x, y = dm.train_set.__getitems__(list(range(n)))
    batches = [(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)) for i in range(0, n, batch_size)]

    ref = load_reference(reference, device)
    torch.manual_seed(0)
    theirs = ref.CapsuleNet().to(device)
    # torch >= 0.4 keeps the class capsules' transposed strides through `x * y`, and the port's `.view` then
    # fails; lay the layer's output out batch-major (a copy of B x 160 numbers) so its view works as it did
    theirs.digit_capsules.register_forward_hook(lambda m, i, out: out.transpose(0, 1).contiguous().transpose(0, 1))
    ours = zoo.create("capsnet", conv_channels=256, primary_capsules=32, judge=None).to(device)
    ref_opt = torch.optim.Adam(theirs.parameters())  # the port's own optimiser: Adam, lr 1e-3
    steps_of = {REF: reference_step(theirs, ref.CapsuleLoss(), ref_opt),
                OURS: ours_step(ours, torch.optim.Adam(ours.parameters(), lr=1e-3))}
    convs = torch.nn.Sequential(torch.nn.Conv2d(1, 256, 9), torch.nn.ReLU(), torch.nn.Conv2d(256, 256, 9, stride=2))
    convs.to(device)

    def conv_step(x: torch.Tensor, y: torch.Tensor) -> None:  # the floor: both convolutions, forward + backward
        convs.zero_grad(set_to_none=True)
        convs(x).sum().backward()

    steps_of[CONVS] = conv_step

    def encoder_step(x: torch.Tensor, y: torch.Tensor) -> None:  # ours without decoder, losses and optimiser
        ours.zero_grad(set_to_none=True)
        ours.capsnet(x).square().sum().backward()

    steps_of[ENCODER] = encoder_step
    rates = {k: [] for k in steps_of}
    for _ in range(repeats):
        for name, step in steps_of.items():
            rates[name].append(images_per_s(step, batches, warmup))
    return rates, {name: sum(q.numel() for q in m.parameters()) for name, m in ((REF, theirs), (OURS, ours))}


def conv_flops_per_image() -> float:
    """Multiply-adds x 2 of the two convolutions per image, forward (both) and backward (weight gradients of
    both, input gradient of the second)."""
    first, second = 20 * 20 * 256 * 81, 6 * 6 * 256 * 256 * 81
    return 2 * (first + second + first + 2 * second)


def rows(reference: Path, repeats: int = 3, steps: int = 5, device: str | None = None) -> list[Row]:
    rates, _ = compare(reference, steps=steps, repeats=repeats, device=device)
    hot = "CapsNet training (Adam, margin + reconstruction loss), batch 100, 3 routings"
    gflops = conv_flops_per_image() * statistics.median(rates[CONVS]) / 1e9
    return [Row(hot, REF, "images/s", rates[OURS], rates[REF], higher_is_better=True, target=3.0),
            Row(f"{hot}: its two convolutions alone", REF, "images/s", rates[CONVS], rates[REF],
                higher_is_better=True, note=f"the convolutions alone (forward + backward, "
                f"{conv_flops_per_image() / 1e9:.2f} GFLOP an image) run at {gflops:.0f} GFLOP/s: the ceiling of "
                "any implementation of the same network"),
            Row(f"{hot}: its convolutions, primary capsules and our routing alone", REF, "images/s",
                rates[ENCODER], rates[REF], higher_is_better=True,
                note="ours without the decoder, the losses and Adam (forward + backward): the part of our step that "
                f"the convolutions do not explain is {_ms(rates[ENCODER], rates[CONVS])} ms per 100 images in the "
                f"routing and {_ms(rates[OURS], rates[ENCODER])} ms in the rest")]


def _ms(slower: list[float], faster: list[float]) -> str:
    """Milliseconds per 100 images between two medians of images/s."""
    return f"{100e3 * (1 / statistics.median(slower) - 1 / statistics.median(faster)):.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", type=Path, help="folder of a gram-ai/capsule-networks checkout")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=5, help="timed training steps per measurement")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--malloc", choices=("zoo", "system"), default="zoo",
                   help="zoo: glibc keeps freed blocks up to 1 GiB for reuse, as the `zoo` command sets it (both "
                   "sides run under it); system: glibc's defaults")
    a = p.parse_args()
    kept = a.malloc == "zoo" and keep_freed_memory()
    rates, params = compare(a.reference, a.batch_size, a.steps, a.warmup, a.repeats, a.device, a.data_dir)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"CapsNet training, batch {a.batch_size}, {a.steps} timed steps after {a.warmup} warm-up, median of "
          f"{a.repeats}, device {a.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"malloc: {'freed blocks kept, as the zoo command sets it' if kept else 'glibc defaults'}")
    print(f"parameters: ours {params[OURS]:,}, gram-ai {params[REF]:,}")
    for name, r in med.items():
        print(f"{name:26s} {r:9.1f} images/s   (runs: {', '.join(f'{v:.1f}' for v in rates[name])})")
    print(f"ratio ours / gram-ai: {med[OURS] / med[REF]:.2f}x")


if __name__ == "__main__":
    main()
