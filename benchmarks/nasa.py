"""NASA's occupancy queries: the batched part networks (zoo.models.nasa.NASA: all K parts' MLPs as batched products)
against the same math as a plain PyTorch loop over the parts, the layout of the official TF1 code (a Python loop
building one dense stack per part).

    python benchmarks/nasa.py [--parts 24 --batch 12 --points 2048 --deformable 1 --repeats 5 --threads N]

Both sides compute the blended occupancy of a batch of posed frames and the gradient of a squared error with respect
to every weight (a training step's work), from the same weights (checked: equal outputs). Prints query points/s of
each and the ratio batched / loop.
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from _compare import Row, interleaved, print_rows, squared_error_step
from zoo.models.nasa import NASA, blend, to_part_frames


def loop_occupancy(net: NASA, points: torch.Tensor, transforms: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """O [B, N], one part at a time."""
    B, N = points.shape[:2]
    x = to_part_frames(points, transforms)
    code = net.pose_code(transforms, root) if net.deformable else None
    W, b = net.mlps.weights, net.mlps.biases
    parts = []
    for k in range(net.K):
        h = x[:, k] if code is None else torch.cat([x[:, k], code[:, k, None].expand(-1, N, -1)], -1)
        h = F.leaky_relu(h @ W[0][k] + b[0][k], 0.1)
        for i in (1, 2, 3):
            h = F.leaky_relu(h @ W[i][k] + b[i][k] + h, 0.1)
        parts.append(torch.sigmoid(h @ W[4][k] + b[4][k])[..., 0])
    return blend(torch.stack(parts, 1), net.soft_blend)


def measure(parts: int, batch: int, points: int, deformable: bool, repeats: int, device: str = "cpu"):
    torch.manual_seed(0)
    net = NASA(parts, deformable).to(device)
    x = torch.rand(batch, points, 3, device=device) - 0.5
    angle = torch.rand(batch, parts, device=device) * 2 * math.pi
    T = torch.eye(4, device=device).repeat(batch, parts, 1, 1)
    T[..., 0, 0], T[..., 0, 1], T[..., 1, 0], T[..., 1, 1] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    T[..., :3, 3] = torch.rand(batch, parts, 3, device=device) - 0.5
    root = torch.zeros(batch, 3, device=device)
    target = (torch.rand(batch, points, device=device) > 0.5).float()
    with torch.no_grad():
        diff = (net(x, T, root).O - loop_occupancy(net, x, T, root)).abs().max().item()
    assert diff < 1e-5, f"the two implementations differ by {diff}"
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    times = interleaved({"batched": squared_error_step(net, lambda: net(x, T, root).O, target),
                         "loop": squared_error_step(net, lambda: loop_occupancy(net, x, T, root), target)},
                        repeats, sync=sync)
    rate = {k: [batch * points / t for t in v] for k, v in times.items()}
    return rate["batched"], rate["loop"], diff


def row(parts: int = 24, batch: int = 12, points: int = 2048, deformable: bool = True, repeats: int = 5,
        device: str = "cpu") -> Row:
    o, lp, diff = measure(parts, batch, points, deformable, repeats, device)
    kind = "D" if deformable else "R"
    return Row(f"NASA {kind} occupancy + gradient, {parts} parts, batch {batch} x {points} points",
               "plain PyTorch loop over parts (official layout)", "points/s", o, lp, higher_is_better=True,
               note=f"outputs agree to {diff:.1e}")


def rows(repeats: int = 5, device: str = "cpu") -> list[Row]:
    return [row(24, 12, 2048, True, repeats, device), row(24, 12, 2048, False, repeats, device)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("parts", 24), ("batch", 12), ("points", 2048), ("deformable", 1), ("repeats", 5),
                          ("threads", None)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print_rows([row(a.parts, a.batch, a.points, bool(a.deformable), a.repeats, a.device)])


if __name__ == "__main__":
    main()
