"""The Sparsely-Gated Mixture-of-Experts layer (Shazeer, Mirhoseini, Maziarz, Davis, Le, Hinton & Dean 2017).

    y = Σ_i G(x)_i E_i(x)                                                        (eq. 1)
    G(x) = Softmax(KeepTopK(H(x), k))                                             (eq. 3)
    H(x)_i = (x W_g)_i + StandardNormal() · Softplus((x W_noise)_i)               (eq. 4)
    KeepTopK(v, k)_i = v_i if v_i is among the top k of v, else −∞                (eq. 5)

W_g and W_noise start at zero (§4 and the tensor2tensor reference, `expert_utils.noisy_top_k_gating`), so every
expert is equally likely at first and the noise alone breaks the ties. As in tensor2tensor, a floor `noise_epsilon`
(1e-2) is added to the softplus; pass 0 for eq. 4 as printed. Noise is drawn only in training; in eval the gate
ranks the clean logits x W_g.

Balancing losses (Appendix A), over the examples X of a batch, with CV² = population variance / mean²:
    Importance(X) = Σ_x G(x),                L_importance = w_importance · CV(Importance(X))²   (eqs. 6-7)
    P(x, i) = Φ(((x W_g)_i − kth_excluding(H(x), k, i)) / Softplus((x W_noise)_i))          (eqs. 8-9)
    Load(X)_i = Σ_x P(x, i),                 L_load = w_load · CV(Load(X))²                     (eq. 10)
P(x, i) is the probability that expert i stays in the top k when only its own noise is drawn again, the others'
noisy logits held fixed. kth_excluding(H, k, i), the k-th largest of H without component i, is the (k+1)-th
largest of H when i is in the top k and the k-th largest when it is not: both come from one top-(k+1) of the noisy
logits. Threshold, clean logit and noisy logits all live in logit space (a port that compares softmax outputs with
logit thresholds computes a different, wrong probability). Without noise (eval, or k = number of experts) Load is
the count of examples sent to each expert, as in the reference.

Dispatch is exact (no capacity limit, no dropped tokens): the N·k (token, expert) assignments are sorted by expert
and scattered into an [E, C, d] buffer, C the largest expert's count; the experts, held as batched weights
[E, d_in, d_hidden] and [E, d_hidden, d_out], run as two batched matrix products; outputs are weighted by their
gates and summed back per token. No Python loop over tokens or experts.

Not supported: the hierarchical MoE (a primary gate choosing groups, each with its own gate; the paper's largest
models) and expert parallelism (experts sharded across devices with all-to-all dispatch). Under DDP every process
holds and runs every expert; FSDP would shard their weights like any other parameter, with dispatch still local.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Experts", "Gating", "MoE", "MoEOutput", "NoisyTopKGate", "cv_squared", "prob_in_top_k"]


def cv_squared(v: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation (population variance / mean²) of a 1-D tensor; 0 for a single value."""
    if v.numel() <= 1:
        return v.new_zeros(())
    return v.var(unbiased=False) / (v.mean() ** 2 + eps)


def prob_in_top_k(clean: torch.Tensor, noisy: torch.Tensor, sigma: torch.Tensor, top: torch.Tensor,
                  k: int) -> torch.Tensor:
    """P(x, i) of eq. 9 for every example and expert, [N, E].

    clean = x W_g, noisy = H(x), sigma = the noise scale (all [N, E]); top = the k+1 largest noisy logits per row,
    in descending order [N, k+1]. An expert in the top k must beat the (k+1)-th value, one outside must beat the
    k-th, each with its own noise drawn again: Φ((clean − threshold) / sigma)."""
    inside = noisy > top[:, k:k + 1]
    threshold = torch.where(inside, top[:, k:k + 1], top[:, k - 1:k])
    z = (clean - threshold) / sigma
    return 0.5 * torch.erfc(-z / math.sqrt(2.0))


class Gating(NamedTuple):
    gates: torch.Tensor        # G(x) [N, E], k non-zero entries per row
    top_index: torch.Tensor    # experts kept per row [N, k], best first
    top_gate: torch.Tensor     # their gate values [N, k]
    importance: torch.Tensor   # Σ_x G(x) [E]
    load: torch.Tensor         # Σ_x P(x, i) [E] (smooth, differentiable) or the counts when there is no noise


class NoisyTopKGate(nn.Module):
    """Noisy top-k gating (eqs. 3-5) with the importance and load statistics of Appendix A."""

    def __init__(self, in_features: int, num_experts: int, k: int, noisy: bool = True, noise_epsilon: float = 1e-2):
        super().__init__()
        if not 1 <= k <= num_experts:
            raise ValueError(f"k={k} must be between 1 and num_experts={num_experts}")
        self.k, self.num_experts, self.noisy, self.noise_epsilon = k, num_experts, noisy, noise_epsilon
        self.w_gate = nn.Parameter(torch.zeros(in_features, num_experts))
        self.w_noise = nn.Parameter(torch.zeros(in_features, num_experts))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> Gating:
        """x [N, in_features]; `noise` (the StandardNormal draw [N, E]) may be given, else it is drawn."""
        k, E = self.k, self.num_experts
        clean = x @ self.w_gate
        noisy_now = self.noisy and self.training
        if noisy_now:
            sigma = F.softplus(x @ self.w_noise) + self.noise_epsilon
            logits = clean + (torch.randn_like(clean) if noise is None else noise) * sigma
        else:
            logits = clean
        top, index = logits.topk(min(k + 1, E), dim=1)
        top_gate = top[:, :k].softmax(dim=1)
        gates = torch.zeros_like(logits).scatter(1, index[:, :k], top_gate)
        if noisy_now and k < E:
            load = prob_in_top_k(clean, logits, sigma, top, k).sum(0)
        else:
            load = (gates > 0).sum(0).to(gates.dtype)
        return Gating(gates, index[:, :k], top_gate, gates.sum(0), load)


class Experts(nn.Module):
    """E feed-forward experts d_in -> d_hidden (ReLU) -> d_out held as batched weights, applied to [E, C, d_in].

    The paper's LM experts have no biases (Appendix C counts 512·1024 + 1024·512 = 1M parameters each)."""

    def __init__(self, num_experts: int, in_features: int, hidden: int, out_features: int, bias: bool = False):
        super().__init__()
        E = num_experts
        self.w1 = nn.Parameter(torch.empty(E, in_features, hidden))
        self.w2 = nn.Parameter(torch.empty(E, hidden, out_features))
        self.b1 = nn.Parameter(torch.zeros(E, 1, hidden)) if bias else None
        self.b2 = nn.Parameter(torch.zeros(E, 1, out_features)) if bias else None
        # each expert as nn.Linear would be: U(±1/sqrt(fan_in))
        nn.init.uniform_(self.w1, -in_features ** -0.5, in_features ** -0.5)
        nn.init.uniform_(self.w2, -hidden ** -0.5, hidden ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.bmm(x, self.w1) if self.b1 is None else torch.baddbmm(self.b1, x, self.w1)
        h = torch.relu(h)
        return torch.bmm(h, self.w2) if self.b2 is None else torch.baddbmm(self.b2, h, self.w2)


class MoEOutput(NamedTuple):
    y: torch.Tensor            # [..., out_features]
    loss: torch.Tensor         # w_importance · CV²(Importance) + w_load · CV²(Load), a scalar
    importance: torch.Tensor   # [E]
    load: torch.Tensor         # [E]


class MoE(nn.Module):
    """A flat sparsely-gated MoE layer: `MoE(x)` -> (y, balancing loss, importance, load) over the leading dims of x.

    Args:
        in_features, out_features, hidden: expert sizes (the paper's LM: 512, 512, 1024).
        num_experts, k: E experts, k of them per example (the paper's flat LM layers: k = 4).
        w_importance, w_load: weights of the two balancing losses (0.1 each is a setting of the paper's Table 6).
        noisy, noise_epsilon: the gate's noise (see the module docstring).
        bias: biases in the experts.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int, num_experts: int, k: int = 4,
                 w_importance: float = 0.1, w_load: float = 0.1, noisy: bool = True, noise_epsilon: float = 1e-2,
                 bias: bool = False):
        super().__init__()
        self.w_importance, self.w_load, self.out_features = w_importance, w_load, out_features
        self.gate = NoisyTopKGate(in_features, num_experts, k, noisy, noise_epsilon)
        self.experts = Experts(num_experts, in_features, hidden, out_features, bias)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> MoEOutput:
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        g = self.gate(x, noise)
        y = self.combine(x, g.top_index, g.top_gate)
        loss = self.w_importance * cv_squared(g.importance) + self.w_load * cv_squared(g.load)
        return MoEOutput(y.reshape(*lead, self.out_features), loss, g.importance, g.load)

    def combine(self, x: torch.Tensor, top_index: torch.Tensor, top_gate: torch.Tensor) -> torch.Tensor:
        """Σ over the kept experts of gate · expert(x), [N, out_features]: sort the assignments by expert, run all
        experts as one batched product over an [E, C, d] buffer, weight by the gates and add back per token."""
        N, k = top_index.shape
        E = self.gate.num_experts
        expert = top_index.flatten()
        order = expert.argsort(stable=True)
        expert = expert[order]
        token = order.div(k, rounding_mode="floor")
        counts = torch.bincount(expert, minlength=E)
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(N * k, device=x.device) - start[expert]
        buffer = x.new_zeros(E, int(counts.max()), x.shape[1])
        buffer[expert, slot] = x[token]
        out = self.experts(buffer)[expert, slot] * top_gate.flatten()[order, None]
        return x.new_zeros(N, out.shape[1]).index_add_(0, token, out)
