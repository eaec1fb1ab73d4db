"""NAM training speed: the grouped feature nets of zoo.models.nam (all features in one einsum per layer) against the
same model written as one small network per feature and a Python loop over them, the layout of the official code
(a list of FeatureNN layers, each called in turn).

    python benchmarks/nam.py [--features 30 --basis 100 --hidden 64 32 --members 1 --batch 1024
                              --steps 10 --repeats 5 --device cpu --threads N]

benchmarks/run.py (and so benchmarks/gpu.py on a lent GPU) prints the default setting's two rows in its table.

Both models start from the same weights (checked: equal outputs) and take Adam steps on the same batches of
scikit-learn's breast cancer data (30 features, encoded as the NAM paper does; --features < 30 keeps the first
ones). Feature nets are sized by the official rule, min(basis, 2 x distinct values). Prints training steps/s of
each and the ratio grouped / loop (target: at least 5x at 30 features).

It also times what any implementation of the same step must do, and nothing else: the matrix products of the
feature nets' layers forward and backward (each layer of all nets as one batched product, as the grouped model
computes them), and the random numbers of the dropout masks. The loop's time over that floor is the most any
layout of the same arithmetic can gain over the loop on this machine.
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from _compare import Row, interleaved
from zoo.data.tabular import TabularDataModule
from zoo.models.nam.model import NAM


class FeatureNet(nn.Module):
    """One feature's network, with its slices of the grouped model's weights (member `e`, feature `k`)."""

    def __init__(self, nam: NAM, e: int, k: int, sl: slice):
        super().__init__()
        self.weight = nn.Parameter(nam.weight[e, sl].detach().clone())
        self.center = nn.Parameter(nam.center[e, sl].detach().clone())
        self.layers = nn.ParameterList(
            [nn.Parameter((w[e, sl] if i == 0 else w[e, k]).detach().clone()) for i, w in enumerate(nam.layers)])
        self.biases = nn.ParameterList([nn.Parameter(b[e, k].detach().clone()) for b in nam.biases])
        self.out = nn.Parameter((nam.out[e, k] if len(nam.layers) else nam.out[e, sl]).detach().clone())
        self.drop = nn.Dropout(nam.dropout.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop((self.weight.exp() * (x[:, None] - self.center)).clamp(0, 1))
        for w, b in zip(self.layers, self.biases):
            h = self.drop(torch.relu(h @ w + b))
        return h @ self.out


class LoopNAM(nn.Module):
    """The same ensemble, looping over members and features."""

    def __init__(self, nam: NAM):
        super().__init__()
        ends = torch.cumsum(nam.units, 0).tolist()
        self.nets = nn.ModuleList(nn.ModuleList(FeatureNet(nam, e, k, slice(ends[k] - int(u), ends[k]))
                                                for k, u in enumerate(nam.units.tolist()))
                                  for e in range(nam.members))
        self.bias = nn.Parameter(nam.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([sum(net(x[:, k]) for k, net in enumerate(nets)) for nets in self.nets], -1) + self.bias


def measure(features: int = 30, basis: int = 100, hidden: tuple[int, ...] = (64, 32), members: int = 1,
            batch: int = 1024, steps: int = 10, repeats: int = 5, device: str = "cpu"
            ) -> tuple[dict[str, list[float]], list[int]]:
    """Training steps/s per repeat of the grouped model, the per-feature loop and the floor (interleaved), and the
    feature nets' widths."""
    dm = TabularDataModule("breast_cancer", folds=5)
    dm.setup()
    x_all = torch.cat([dm.train_set.x, dm.val_set.x, dm.test_set.x])[:, :features]
    y_all = torch.cat([dm.train_set.y, dm.val_set.y, dm.test_set.y])
    units = [min(basis, 2 * len(torch.unique(c))) for c in x_all.T]
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(y_all), (steps, batch), generator=g)
    batches = [(x_all[i].to(device), y_all[i].to(device)) for i in idx]
    grouped = NAM(features, units, list(hidden), dropout=0.5, members=members).to(device)
    loop = LoopNAM(grouped).to(device)
    grouped.eval(), loop.eval()
    with torch.no_grad():
        assert torch.allclose(grouped(batches[0][0]), loop(batches[0][0]), atol=1e-4), "the two models differ"
    grouped.train(), loop.train()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def trainer(model: nn.Module):
        opt = torch.optim.Adam(model.parameters(), lr=0.01)

        def run():
            for x, y in batches:
                out = model(x)
                loss = nn.functional.binary_cross_entropy_with_logits(out, y[:, None].expand_as(out))
                opt.zero_grad()
                loss.backward()
                opt.step()
        return run

    def floor():
        """The step's matrix products (forward, input and weight gradients of every layer of every net, padded to
        the widest net as the grouped model pads) and its dropout draws, on stand-in tensors."""
        E, K, B = members, features, batch
        widths = [max(units), *hidden]
        ins = [torch.rand(E * K, i, B, device=device) for i in widths]
        ws = [torch.rand(E * K, o, i, device=device) for i, o in zip(widths, [*hidden, 1])]
        outs = [torch.rand(E * K, o, B, device=device) for o in [*hidden, 1]]
        draws = [E * sum(units) * B] + [E * K * h * B for h in hidden]

        def run():
            for _ in batches:
                for x, w, g in zip(ins, ws, outs):
                    torch.bmm(w, x)                      # forward
                    torch.bmm(w.transpose(1, 2), g)      # gradient of the input
                    torch.bmm(g, x.transpose(1, 2))      # gradient of the weights
                for n in draws:
                    torch.rand(n, device=device)
        return run

    times = interleaved({"grouped": trainer(grouped), "loop": trainer(loop), "floor": floor()}, repeats, sync=sync)
    return {k: [steps / t for t in v] for k, v in times.items()}, units


def rows(repeats: int = 5, device: str = "cpu") -> list[Row]:
    """benchmarks/run.py's rows: the grouped model and the floor against the per-feature loop, at the defaults."""
    rate, units = measure(repeats=repeats, device=device)
    hot = f"NAM training step, 30 features ({sum(units)} units), hidden [64, 32], batch 1024"
    loop = "per-feature loop of the same model (the official layout)"
    return [Row(hot, loop, "steps/s", rate["grouped"], rate["loop"], higher_is_better=True, target=5.0),
            Row(f"{hot}: its matrix products and dropout draws alone", loop, "steps/s", rate["floor"], rate["loop"],
                higher_is_better=True, note="the step's batched products (forward, input and weight gradients) and "
                "dropout draws, nothing else: the most any layout of the same arithmetic gains over the loop")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", type=int, default=30)
    p.add_argument("--basis", type=int, default=100, help="num_basis_functions (the paper's is 1000)")
    p.add_argument("--hidden", type=int, nargs="*", default=[64, 32])
    p.add_argument("--members", type=int, default=1)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10, help="training steps per timed call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rate, units = measure(a.features, a.basis, tuple(a.hidden), a.members, a.batch, a.steps, a.repeats, a.device)
    ratios = [gs / ls for gs, ls in zip(rate["grouped"], rate["loop"])]
    print(f"NAM training, {a.features} features (units {sum(units)} in all, max {max(units)}), hidden {a.hidden}, "
          f"{a.members} member(s), batch {a.batch}, {a.device}, {torch.get_num_threads()} threads")
    for k in ("grouped", "loop", "floor"):
        print(f"  {k:8s} {statistics.median(rate[k]):8.2f} steps/s  (repeats: "
              f"{', '.join(f'{r:.2f}' for r in rate[k])})")
    print(f"ratio grouped / per-feature loop: {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, "
          f"max {max(ratios):.2f})")
    ceiling = [f / lp for f, lp in zip(rate["floor"], rate["loop"])]
    print(f"ceiling (the step's matrix products and dropout draws alone) / per-feature loop: "
          f"{statistics.median(ceiling):.2f}x (min {min(ceiling):.2f}, max {max(ceiling):.2f})")


if __name__ == "__main__":
    main()
