"""Optimisation pieces shared by several papers."""
from __future__ import annotations

import torch


def linear_cooldown(max_epochs: int):
    """LambdaLR factor: constant for the first half of training, then linear decay towards zero
    (the Forward-Forward reference code's schedule)."""
    half = max_epochs / 2

    def factor(epoch: int) -> float:
        return 1.0 if epoch < half else (max_epochs - epoch) / (max_epochs - half)

    return factor


def with_cooldown(opt: torch.optim.Optimizer, max_epochs: int | None, enabled: bool = True):
    """What `configure_optimizers` returns: `opt` alone, or with a per-epoch linear cooldown."""
    if not enabled or max_epochs is None or max_epochs < 1:
        return opt
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_cooldown(max_epochs))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
