"""The Lookahead paper's robustness experiment in miniature: the same network trained briefly by SGD, Adam and
Lookahead around each, at several learning rates, then scored on held-out data (plain loops, no Trainer)."""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zoo.optim import Lookahead

#: the four optimisers compared, by name
OPTIMISERS = ("SGD", "Adam", "Lookahead(SGD)", "Lookahead(Adam)")


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float, k: int = 5, alpha: float = 0.5,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """One of OPTIMISERS: SGD with momentum or Adam, wrapped in Lookahead(k, α) when the name says so."""
    if name not in OPTIMISERS:
        raise ValueError(f"optimizer must be one of {OPTIMISERS}, got {name!r}")
    inner = (torch.optim.Adam(params, lr=lr) if "Adam" in name
             else torch.optim.SGD(params, lr=lr, momentum=momentum))
    return Lookahead(inner, k=k, alpha=alpha) if name.startswith("Lookahead") else inner


def epochs_of(loader) -> Iterator:
    """Batches of `loader`, epoch after epoch (calling the sampler's `set_epoch` when it has one)."""
    for epoch in itertools.count():
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader


@torch.no_grad()
def score(net: nn.Module, batches: Iterable, device: torch.device) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the batches; a network that produced NaNs scores NaN loss."""
    net.eval()
    correct = total = 0
    loss = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = net(x)
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        total += len(y)
    return correct / total, loss / total


def train_briefly(net: nn.Module, opt: torch.optim.Optimizer, batches: Iterator, steps: int,
                  device: torch.device) -> bool:
    """`steps` updates on cross-entropy; stops early and returns False once the loss is no longer finite."""
    net.train()
    for x, y in itertools.islice(batches, steps):
        loss = F.cross_entropy(net(x.to(device)), y.to(device))
        if not torch.isfinite(loss):
            return False
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return True


def lr_sweep(make_net: Callable[[], nn.Module], lrs: dict[str, list[float]], train_loader, val_loader, steps: int,
             k: int = 5, alpha: float = 0.5, seed: int = 0, device: torch.device | str = "cpu",
             echo: Callable[[str], None] = print) -> list[dict]:
    """Every (optimiser, lr) run starts from the same initial weights (`make_net` under `seed`) and sees the same
    batches; Lookahead runs are scored on their slow weights, as the paper evaluates. One row per run:
    {optimizer, lr, val_acc, val_loss, diverged, seconds}."""
    device = torch.device(device)
    runs = [(name, lr) for name in lrs for lr in lrs[name]]
    rows = []
    for i, (name, lr) in enumerate(runs, 1):
        start = time.perf_counter()
        torch.manual_seed(seed)
        net = make_net().to(device)
        opt = make_optimizer(name, net.parameters(), lr, k=k, alpha=alpha)
        finite = train_briefly(net, opt, epochs_of(train_loader), steps, device)
        if isinstance(opt, Lookahead):
            opt.swap_slow()
        acc, loss = score(net, val_loader, device)
        diverged = not finite or not math.isfinite(loss)
        rows.append({"optimizer": name, "lr": lr, "val_acc": acc, "val_loss": math.nan if diverged else loss,
                     "diverged": diverged, "seconds": time.perf_counter() - start})
        echo(f"lr sweep {i}/{len(runs)}: {name} lr={lr:g}: val acc {acc:.4f}, "
             f"{'diverged' if diverged else f'val loss {loss:.4f}'} ({rows[-1]['seconds']:.0f} s)")
    return rows


def sensitivity(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per optimiser: the best, worst and spread (best − worst) validation accuracy over the learning rates."""
    out = {}
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        accs = [r["val_acc"] for r in rows if r["optimizer"] == name]
        out[name] = {"best": max(accs), "worst": min(accs), "spread": max(accs) - min(accs)}
    return out
