"""The soft binary decision tree of Frosst & Hinton (2017), "Distilling a Neural Network Into a Soft Decision
Tree": a hierarchical mixture of bigots. Plain nn.Modules named after the paper's symbols.

Nodes are numbered breadth first: inner node i (0 .. 2^d − 2) sits at level ⌊log2(i + 1)⌋, its children are
2i + 1 (left) and 2i + 2 (right); leaf ℓ (0 .. 2^d − 1) is the ℓ-th node of the last level, left to right.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def node_levels(depth: int) -> torch.Tensor:
    """The level d(i) of every inner node of a tree of this depth, [2^depth − 1] (the root: 0)."""
    return torch.cat([torch.full((2 ** d,), d) for d in range(depth)])


class SoftDecisionTree(nn.Module):
    """A soft binary tree of depth d on flat inputs.

    Inner node i takes the right branch with p_i(x) = σ(β(x·w_i + b_i)) (eq. 1 with the inverse temperature β
    the paper adds "to avoid very soft decisions", one learned scalar for the whole tree); leaf ℓ holds a
    learned, input-independent distribution Q^ℓ = softmax(φ^ℓ) (eq. 2). P^ℓ(x) is the product of the branch
    probabilities on the path from the root to leaf ℓ.
    """

    def __init__(self, in_features: int, num_classes: int, depth: int, beta: float = 1.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        inner = 2 ** depth - 1
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default: x·w of order 1, decisions start soft
        self.w = nn.Parameter(torch.empty(inner, in_features).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.empty(inner).uniform_(-bound, bound))
        self.beta = nn.Parameter(torch.tensor(float(beta)))
        self.phi = nn.Parameter(0.1 * torch.randn(2 ** depth, num_classes))

    @property
    def num_inner(self) -> int:
        return self.w.shape[0]

    @property
    def num_leaves(self) -> int:
        return self.phi.shape[0]

    def branch_probs(self, x: torch.Tensor) -> torch.Tensor:
        """p_i(x) for every inner node, [B, 2^depth − 1] (eq. 1 with β)."""
        return torch.sigmoid(self.beta * F.linear(x.flatten(1), self.w, self.b))

    def path_probs(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P^i at the inner nodes [B, 2^d − 1], P^ℓ at the leaves [B, 2^d]) from the branch probabilities.

        One step per level: the 2^k path probabilities of level k split into left (1 − p) and right (p)
        children, interleaved so that the result is again in breadth-first order."""
        P = p.new_ones(p.shape[0], 1)
        inner = []
        for k in range(self.depth):
            inner.append(P)
            pk = p[:, 2 ** k - 1 : 2 ** (k + 1) - 1]
            P = torch.stack([P * (1 - pk), P * pk], dim=2).flatten(1)
        return torch.cat(inner, dim=1), P

    def log_Q(self) -> torch.Tensor:
        """log Q^ℓ_k for every leaf, [2^d, K] (eq. 2)."""
        return F.log_softmax(self.phi, dim=-1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.branch_probs(x)
        P_inner, P_leaf = self.path_probs(p)
        return {"p": p, "P_inner": P_inner, "P_leaf": P_leaf}

    def most_probable_leaf(self, P_leaf: torch.Tensor) -> torch.Tensor:
        """log Q of the leaf with the greatest path probability, [B, K]: the paper's explainable prediction."""
        return self.log_Q()[P_leaf.argmax(1)]

    def mixture(self, P_leaf: torch.Tensor) -> torch.Tensor:
        """log Σ_ℓ P^ℓ(x) Q^ℓ, [B, K]: the prediction averaged over all leaves by path probability."""
        return (P_leaf @ self.log_Q().exp()).clamp_min(1e-30).log()


def leaf_loss(P_leaf: torch.Tensor, log_Q: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """The tree's data loss, batch mean: "the cross entropy between each leaf, weighted by its path
    probability, and the target distribution", L(x) = Σ_ℓ P^ℓ(x) · (−Σ_k T_k log Q^ℓ_k).

    Eq. (3) as printed, −log(Σ_ℓ P^ℓ(x) Σ_k T_k log Q^ℓ_k), takes the log of a negative number (each inner
    sum is ≤ 0), so it cannot be what was trained; the sentence that introduces it is implemented here.
    P_leaf [B, L], log_Q [L, K], T [B, K] (one-hot labels or a teacher's soft targets)."""
    cross_entropy = -(T @ log_Q.T)  # [B, L]: −Σ_k T_k log Q^ℓ_k
    return (P_leaf * cross_entropy).sum(1).mean()


class BalancePenalty(nn.Module):
    """The paper's regulariser that keeps every inner node using both subtrees:
    C = −λ Σ_i 2^{−d(i)} · [½ log α_i + ½ log(1 − α_i)], α_i = Σ_x P^i(x) p_i(x) / Σ_x P^i(x),
    the cross-entropy between (½, ½) and the node's average split (α_i, 1 − α_i), with a strength that
    decays as 2^{−d} with the node's depth d.

    Deeper nodes see exponentially fewer examples per batch, so the paper estimates α_i from "an exponentially
    decaying running average ... with a time window that is exponentially proportional to the depth of the
    node": here the sums Σ P^i p_i and Σ P^i decay by γ_d = 1 − 1/(window · 2^d) per batch, so each node's
    estimate rests on about `window` batches' worth of the examples that reach it. Past batches are
    constants; the gradient flows through the current one, which weighs about 1/(window · 2^d) of the
    estimate, so the penalty's gradient at depth d shrinks by that factor on top of λ·2^{−d}. `window = 0`
    uses the current batch only.
    """

    def __init__(self, depth: int, lam: float, window: float = 0.0, eps: float = 1e-6):
        super().__init__()
        if window != 0 and window < 1:
            raise ValueError(f"window must be 0 (current batch only) or at least 1 batch, got {window}")
        levels = node_levels(depth).float()
        self.lam, self.window, self.eps = lam, window, eps
        self.register_buffer("strength", lam * 2.0 ** -levels, persistent=False)
        gamma = 1 - 1 / (window * 2.0 ** levels) if window else torch.zeros_like(levels)
        self.register_buffer("gamma", gamma, persistent=False)
        # running Σ P^i p_i and Σ P^i (training statistics, not weights: kept out of the state dict)
        self.register_buffer("num", torch.zeros_like(levels), persistent=False)
        self.register_buffer("den", torch.zeros_like(levels), persistent=False)

    def alpha(self, p: torch.Tensor, P_inner: torch.Tensor, update: bool = False) -> torch.Tensor:
        """α_i for every inner node, [2^d − 1]; with `update`, the running sums take in this batch."""
        num = self.gamma * self.num + (P_inner * p).sum(0)
        den = self.gamma * self.den + P_inner.sum(0)
        if update:
            self.num.copy_(num.detach())
            self.den.copy_(den.detach())
        return num / den.clamp_min(self.eps)

    def forward(self, p: torch.Tensor, P_inner: torch.Tensor) -> torch.Tensor:
        a = self.alpha(p, P_inner, update=self.training).clamp(self.eps, 1 - self.eps)
        return -(self.strength * 0.5 * (a.log() + (1 - a).log())).sum()
