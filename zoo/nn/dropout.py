"""Inverted dropout with its mask drawn as `rand < 1 − p`: the same Bernoulli(1 − p) mask and 1/(1 − p) scaling
as `nn.Dropout`, but on the CPU torch's `bernoulli_` (what `nn.Dropout` draws with) takes about five times as long
as `rand_like` for the same mask (67 ms against 14 ms for 3 M numbers on one thread), which made it a third of a
NAM training step. On GPUs the two cost about the same."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Dropout"]


class Dropout(nn.Module):
    """`nn.Dropout(p)` with a faster mask (module docstring); identity in eval mode or at p = 0."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout p={p}: need 0 <= p < 1")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        return x * (torch.rand_like(x) < keep) * (1.0 / keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"
