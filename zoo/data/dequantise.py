"""Continuous densities on discrete images: uniform dequantisation and bits per dimension (Theis, van den Oord
& Bethge 2016). Shared by every density model that reports a likelihood of integer pixels (DMFA, GRBM)."""
from __future__ import annotations

import math

import torch


def dequantise(x: torch.Tensor, levels: int | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [0, 1] with `levels` grey levels -> (v + u) / levels with v the integer level and u ~ U[0, 1):
    E_u log p((v + u) / levels) − D log levels is a lower bound on log P(v), float64 [B, D].
    levels=None: the data are continuous already and pass unchanged (flattened, float64)."""
    if levels is None:
        return x.flatten(1).double()
    v = (x.flatten(1).double() * (levels - 1)).round()
    u = torch.rand(v.shape, generator=generator, dtype=v.dtype, device=generator.device if generator else v.device)
    return (v + u.to(v.device)) / levels


def bits_per_dim(loglik: torch.Tensor | float, dims: int, levels: int) -> torch.Tensor:
    """Bits per dimension of the discrete images from the log density (nats per image) of their dequantised
    version on [0, 1)^D: (log levels − loglik / D) / log 2, an upper bound on the discrete model's."""
    return (math.log(levels) - torch.as_tensor(loglik, dtype=torch.float64) / dims) / math.log(2)
