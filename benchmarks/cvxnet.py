"""CvxNet's occupancy queries: the batched smooth union of convexes (zoo.models.cvxnet.MultiConvex: all K·H
half-spaces of a batch in one matrix product) against the same math written as a plain PyTorch loop over the
convexes (each convex's half-spaces, its LogSumExp and its sigmoid in turn, then the max), the layout a direct
reading of the paper's indicator gives. No official PyTorch code exists (the official code is TensorFlow 1).

    python benchmarks/cvxnet.py [--dims 2 --K 50 --H 25 --batch 32 --points 512 --repeats 5 --threads N]

Both sides compute the indicator and the gradient of a squared-error loss with respect to the decoded parameters
(forward + backward, what a training step spends in the decoder's output layer), from the same parameters (checked:
equal outputs). Prints query points/s of each and the ratio batched / loop. `rows()` (for benchmarks/run.py) adds
the symmetric Chamfer distance of two 4,096-point clouds (zoo.metrics.chamfer_distance, exact torch.cdist by
chunks) against scipy's cKDTree, the usual way to compute it (the official CvxNet evaluation builds a KD-tree).
"""
from __future__ import annotations

import argparse
import statistics

import torch

from _compare import Row, interleaved
from zoo.models.cvxnet import MultiConvex


def loop_indicator(mc: MultiConvex, beta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """O [B, N] convex by convex, the translations appended to the points as the official code does."""
    p = mc.split(beta)
    pts = torch.cat([x, p.c], 1)
    parts = []
    for k in range(mc.K):
        planes = torch.einsum("bhd,bnd->bhn", p.n[:, k], pts - p.c[:, k, None]) + p.d[:, k, :, None]
        delta = p.delta[:, k, None]
        parts.append(torch.sigmoid(-mc.sigma * torch.logsumexp(planes * delta[..., None], 1) / delta))
    return torch.stack(parts, 1)[..., :x.shape[1]].amax(1)


def measure(dims: int, K: int, H: int, batch: int, points: int, repeats: int, device: str = "cpu"):
    mc = MultiConvex(dims, K, H)
    g = torch.Generator().manual_seed(0)
    beta = torch.randn(batch, mc.n_params, generator=g).to(device).requires_grad_()
    x = (torch.rand(batch, points, dims, generator=g) - 0.5).to(device)
    target = (torch.rand(batch, points, generator=g) > 0.5).float().to(device)
    with torch.no_grad():
        diff = (mc(mc.split(beta), x).O - loop_indicator(mc, beta, x)).abs().max().item()
    assert diff < 1e-5, f"the two implementations differ by {diff}"
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step(fn):
        def run():
            beta.grad = None
            (fn() - target).square().mean().backward()
        return run

    times = interleaved({"batched": step(lambda: mc(mc.split(beta), x).O),
                         "loop": step(lambda: loop_indicator(mc, beta, x))}, repeats, sync=sync)
    rate = {k: [batch * points / t for t in v] for k, v in times.items()}
    return rate["batched"], rate["loop"], diff


def chamfer_vs_kdtree(n: int, repeats: int) -> tuple[list[float], list[float], float]:
    """Seconds per Chamfer distance of two n-point clouds: ours and scipy cKDTree's (trees built in the call)."""
    import numpy as np
    from scipy.spatial import cKDTree

    from zoo.metrics import chamfer_distance

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)
    an, bn = a.numpy().astype(np.float64), b.numpy().astype(np.float64)

    def kd():
        return np.mean(cKDTree(bn).query(an)[0] ** 2) + np.mean(cKDTree(an).query(bn)[0] ** 2)

    diff = abs(float(chamfer_distance(a, b)) - kd())
    times = interleaved({"ours": lambda: chamfer_distance(a, b), "kdtree": kd}, repeats)
    return times["ours"], times["kdtree"], diff


def rows(repeats: int = 5, device: str = "cpu") -> list[Row]:
    ours, kd, diff = chamfer_vs_kdtree(4096, repeats)
    out = [Row("Chamfer distance, 2 x 4,096 points in 3-D", "scipy cKDTree (trees built per call)", "ms",
               [1e3 * t for t in ours], [1e3 * t for t in kd], note=f"values agree to {diff:.1e}")]
    for dims, points in ((2, 512), (3, 2048)):
        o, lp, diff = measure(dims, 50, 25, 32, points, repeats, device)
        out.append(Row(f"CvxNet indicator + gradient, {dims}-D, K 50, H 25, batch 32 x {points} points",
                       "plain PyTorch loop over convexes (same math)", "points/s", o, lp, higher_is_better=True,
                       note=f"outputs agree to {diff:.1e}"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, default=2)
    p.add_argument("--K", type=int, default=50)
    p.add_argument("--H", type=int, default=25)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--points", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    o, lp, diff = measure(a.dims, a.K, a.H, a.batch, a.points, a.repeats, a.device)
    ratios = [x / y for x, y in zip(o, lp)]
    print(f"CvxNet indicator + gradient, {a.dims}-D, K={a.K}, H={a.H}, batch {a.batch} x {a.points} points, "
          f"{a.device}, {torch.get_num_threads()} threads (outputs agree to {diff:.1e})")
    for name, r in (("batched", o), ("loop", lp)):
        print(f"  {name:8s} {statistics.median(r):12.0f} points/s  (repeats: {', '.join(f'{v:.0f}' for v in r)})")
    print(f"ratio batched / loop over convexes: {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, "
          f"max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
