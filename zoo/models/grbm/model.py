"""Gaussian-Bernoulli RBM (Liao, Kornblith, Ren, Fleet & Hinton, "Gaussian-Bernoulli RBMs Without Tears",
arXiv 2210.10318): energy, conditionals, free energy, and the Gibbs and Gibbs-Langevin samplers.

    E(v, h) = ½ ‖(v − μ) / σ‖² − (v / σ²)ᵀ W h − bᵀ h,   σ² = exp(log_var) learned per visible unit
    p(h_j = 1 | v) = sigmoid(Wᵀ(v / σ²) + b)_j,          p(v | h) = N(μ + W h, diag σ²)
    F(v) = −log Σ_h e^{−E(v,h)} = ½ ‖(v − μ) / σ‖² − Σ_j softplus(Wᵀ(v / σ²) + b)_j

Samplers run many chains at once (rows of v); the only Python loops are over time steps.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cosine_steps(eta_max: float, k: int) -> list[float]:
    """The Langevin step sizes η_t = η_max (1 + cos(π t / K)) / 2, t = 0..K−1 (the reference code's anneal)."""
    return [eta_max * (1 + math.cos(math.pi * t / k)) / 2 for t in range(k)]


class GRBM(nn.Module):
    """W [V, H], b [H], μ [V], log σ² [V]; initialised as in the reference code (W ~ N(0, s/√(V+H)),
    b = μ = 0, σ² = s with s = init_var)."""

    def __init__(self, visible: int, hidden: int, init_var: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(visible, hidden) * init_var / math.sqrt(visible + hidden))
        self.b = nn.Parameter(torch.zeros(hidden))
        self.mu = nn.Parameter(torch.zeros(visible))
        self.log_var = nn.Parameter(torch.full((visible,), math.log(init_var)))

    @property
    def var(self) -> torch.Tensor:
        return self.log_var.exp().clamp_min(1e-8)

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) per row: [B, V], [B, H] -> [B]."""
        var = self.var
        return 0.5 * ((v - self.mu).pow(2) / var).sum(1) - ((v / var) @ self.W * h).sum(1) - h @ self.b

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        return (v / self.var) @ self.W + self.b

    def p_h_given_v(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.hidden_logits(v))

    def mean_v_given_h(self, h: torch.Tensor) -> torch.Tensor:
        return self.mu + h @ self.W.T

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = −log Σ_h exp(−E(v, h)) per row: the negative unnormalised log density of v."""
        return 0.5 * ((v - self.mu).pow(2) / self.var).sum(1) - F.softplus(self.hidden_logits(v)).sum(1)

    def energy_grad_v(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """∇_v E(v, h) = (v − μ − W h) / σ² per row."""
        return (v - self.mean_v_given_h(h)) / self.var

    @torch.no_grad()
    def gibbs(self, v: torch.Tensor, steps: int, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block Gibbs sampling: h ~ p(h|v), v ~ N(μ + W h, σ²), `steps` times, for every row at once."""
        std = self.var.sqrt()
        h = torch.bernoulli(self.p_h_given_v(v), generator=generator)
        for _ in range(steps):
            m = self.mean_v_given_h(h)
            v = m + std * torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)
            h = torch.bernoulli(self.p_h_given_v(v), generator=generator)
        return v, h

    @torch.no_grad()
    def gibbs_langevin(self, v: torch.Tensor, steps: int, langevin_steps: int = 10, eta: float = 1.0,
                       anneal: bool = True, drift_per_batch: bool = True,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Gibbs-Langevin sampling (§4): h ~ p(h|v), then `langevin_steps` Langevin steps on v under E(v, h):
        v ← v − η_t d ∇_v E(v, h) + √(2 η_t) ξ, with η_t the cosine schedule from `eta` (or constant `eta`).

        `drift_per_batch` keeps the reference code's scaling d = 1/B (B = the number of chains), which its
        published step sizes (η = 20 · mean σ²) assume; with False, d = 1 (unadjusted Langevin)."""
        d = 1.0 / v.shape[0] if drift_per_batch else 1.0
        etas = cosine_steps(eta, langevin_steps) if anneal else [eta] * langevin_steps
        h = torch.bernoulli(self.p_h_given_v(v), generator=generator)
        for _ in range(steps):
            for eta_t in etas:
                noise = torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
                v = v - eta_t * d * self.energy_grad_v(v, h) + math.sqrt(2 * eta_t) * noise
            h = torch.bernoulli(self.p_h_given_v(v), generator=generator)
        return v, h
