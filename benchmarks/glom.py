"""GLOM's settling: the batched update (zoo.models.glom.GLOM: every level's bottom-up and top-down nets in one
batched product each, the attention of all levels in one) against the same math as a plain PyTorch loop over the
levels (each level's two predictions, its attention and its average in turn), the layout a direct reading of the
paper's update gives. GLOM has no official code.

    python benchmarks/glom.py [--levels 3 --dim 64 --hidden 128 --batch 32 --grid 8 --steps 6 --repeats 5]

Both sides run T steps from the same patches and weights and back-propagate a squared-error loss on the final
state (a training step's work in the columns; checked: equal states). Prints columns·steps/s of each and the
ratio batched / loop.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from _compare import Row, interleaved, print_rows, squared_error_step
from zoo.models.glom import GLOM


def loop_settle(net: GLOM, patches: torch.Tensor, T: int) -> torch.Tensor:
    """The state [L, B, N, d] after T steps, one level at a time."""
    e = net.up_1(patches)
    x = list(net.bottom_up(e))
    L = net.levels
    w_prev, w_up, w_down, w_att = net.w.tolist()
    B, N = e.shape[:2]
    loc = net.location.expand(B, N, -1)
    for _ in range(T):
        new = []
        for lvl in range(L):
            up = e if lvl == 0 else torch.relu(x[lvl - 1] @ net.up.w1[lvl - 1] + net.up.b1[lvl - 1]) \
                @ net.up.w2[lvl - 1] + net.up.b2[lvl - 1]
            u = F.normalize(x[lvl], dim=-1)
            logits = (u @ u.transpose(1, 2) * net.beta[lvl]).masked_fill(~net.mask[lvl], float("-inf"))
            total = w_prev * x[lvl] + w_up * up + w_att * logits.softmax(-1) @ x[lvl]
            norm = w_prev + w_up + w_att
            if lvl < L - 1:
                h = torch.relu(torch.cat([x[lvl + 1], loc], -1) @ net.down.w1[lvl] + net.down.b1[lvl])
                total, norm = total + w_down * (h @ net.down.w2[lvl] + net.down.b2[lvl]), norm + w_down
            new.append(total / norm)
        x = new
    return torch.stack(x)


def measure(levels: int, dim: int, hidden: int, batch: int, grid: int, steps: int, repeats: int,
            device: str = "cpu"):
    torch.manual_seed(0)
    radii = [1, *range(2, levels)][:levels - 1] + [None]
    net = GLOM(36, (grid, grid), levels, dim, hidden, radii=radii).to(device)
    patches = torch.rand(batch, grid * grid, 36, device=device)
    target = torch.randn(levels, batch, grid * grid, dim, device=device)
    with torch.no_grad():
        diff = (net(patches, steps)[-1] - loop_settle(net, patches, steps)).abs().max().item()
    assert diff < 1e-4, f"the two implementations differ by {diff}"
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    times = interleaved({"batched": squared_error_step(net, lambda: net(patches, steps)[-1], target),
                         "loop": squared_error_step(net, lambda: loop_settle(net, patches, steps), target)},
                        repeats, sync=sync)
    rate = {k: [batch * grid * grid * steps / t for t in v] for k, v in times.items()}
    return rate["batched"], rate["loop"], diff


def row(levels: int, dim: int = 64, hidden: int = 128, batch: int = 32, grid: int = 8, steps: int = 6,
        repeats: int = 5, device: str = "cpu") -> Row:
    o, lp, diff = measure(levels, dim, hidden, batch, grid, steps, repeats, device)
    return Row(f"GLOM settling + gradient, {levels} levels of {dim}, {grid} x {grid} columns, batch {batch}, "
               f"{steps} steps", "plain PyTorch loop over levels (same math)", "column-steps/s", o, lp,
               higher_is_better=True, note=f"states agree to {diff:.1e}")


def rows(repeats: int = 5, device: str = "cpu") -> list[Row]:
    return [row(levels, repeats=repeats, device=device) for levels in (3, 5)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("levels", 3), ("dim", 64), ("hidden", 128), ("batch", 32), ("grid", 8), ("steps", 6),
                          ("repeats", 5), ("threads", None)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print_rows([row(a.levels, a.dim, a.hidden, a.batch, a.grid, a.steps, a.repeats, a.device)])


if __name__ == "__main__":
    main()
