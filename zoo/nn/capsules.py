"""Capsules with dynamic routing (Sabour, Frosst & Hinton 2017), shared by DARCCC, "Detecting and
Diagnosing Adversarial Images" and "Deflecting Adversarial Attacks". Every operation is batched over
examples, input capsules and output capsules: no Python loop except the r routing iterations.

Shapes: u [B, N_in, D_in] input capsules; û [B, N_in, N_out, D_out] predictions; v [B, N_out, D_out].
`dynamic_routing` routes given predictions û; `RoutingCapsules` (through `fused_routing`) never builds û: it
folds the transformation matrices into the two routing contractions, so each is one batched matrix product.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["squash", "dynamic_routing", "fused_routing", "margin_loss", "mask_capsules", "PrimaryCapsules",
           "RoutingCapsules"]


def squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-16) -> torch.Tensor:
    """Eq. 1: v = (‖s‖² / (1 + ‖s‖²)) · s / ‖s‖ = s·‖s‖ / (1 + ‖s‖²) — short vectors shrink towards 0, long ones
    towards length 1. `eps` only keeps the gradient finite at s = 0."""
    sq = s.pow(2).sum(dim, keepdim=True)
    return s * ((sq + eps).sqrt() / (1 + sq))


def dynamic_routing(u_hat: torch.Tensor, iterations: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedure 1: routing by agreement. Each input capsule i splits its vote among the *parent* capsules j
    by c_ij = softmax_j(b_ij) (the softmax runs over parents; several popular ports run it over children),
    s_j = Σ_i c_ij û_j|i, v_j = squash(s_j), and the logits grow by the agreement b_ij += û_j|i · v_j.
    Returns (v [B, N_out, D_out], c [B, N_in, N_out])."""
    if iterations < 1:
        raise ValueError("dynamic routing needs at least one iteration")
    b = u_hat.new_zeros(u_hat.shape[:3])
    for r in range(iterations):
        c = b.softmax(dim=2)
        v = squash(torch.einsum("bij,bijd->bjd", c, u_hat))
        if r < iterations - 1:
            b = b + torch.einsum("bijd,bjd->bij", u_hat, v)
    return v, c


def fused_routing(u: torch.Tensor, W: torch.Tensor, iterations: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedure 1 on û_j|i = W_ij u_i without materialising û [B, N_in, N_out, D_out].

    W is [N_out, D_out, D_in, N_in] (W[j, :, :, i] is W_ij). Both routing sums are contractions over (k, i):
    s_j = Σ_i c_ij W_ij u_i = W_j · (c_·j ⊙ u) and û_j|i · v_j = u_i · (W_ijᵀ v_j), i.e. one batched matrix
    product per step over the N_out parents, half the memory of û and no tiny matrix-vector products; the
    input-capsule index runs fastest so the elementwise products vectorise. The first iteration's c is uniform
    (1/N_out), so its s is a single matrix product. Returns (v [B, N_out, D_out], c [B, N_in, N_out]), the same
    as `dynamic_routing(einsum("jdki,bik->bijd", W, u))`."""
    if iterations < 1:
        raise ValueError("dynamic routing needs at least one iteration")
    J, D, K, I = W.shape
    B = u.shape[0]
    ut = u.transpose(1, 2).contiguous()  # [B, K, I]
    Wf = W.reshape(J, D, K * I)
    s = (ut.reshape(B, K * I) @ Wf.reshape(J * D, K * I).t()).view(B, J, D) / J
    b = c = None
    for r in range(iterations):
        if r > 0:
            c = b.softmax(dim=0)  # [J, B, I]: each child splits its vote over the parents
            x = (c.unsqueeze(2) * ut).reshape(J, B, K * I)  # c_ij u_i
            s = torch.bmm(x, Wf.transpose(1, 2)).transpose(0, 1)  # [B, J, D]
        v = squash(s)
        if r < iterations - 1:
            pull = torch.bmm(v.transpose(0, 1), Wf).view(J, B, K, I)  # W_ijᵀ v_j
            agreement = (pull * ut).sum(2)  # [J, B, I]
            b = agreement if b is None else b + agreement
    c = u.new_full((B, I, J), 1.0 / J) if c is None else c.permute(1, 2, 0)
    return v, c


def margin_loss(v: torch.Tensor, labels: torch.Tensor, m_plus: float = 0.9, m_minus: float = 0.1,
                lam: float = 0.5, reduction: str = "mean") -> torch.Tensor:
    """Eq. 4: Σ_k T_k max(0, m⁺ − ‖v_k‖)² + λ (1 − T_k) max(0, ‖v_k‖ − m⁻)², summed over classes; the batch
    mean, or one value per example with `reduction="none"`."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    length = v.norm(dim=-1)
    t = F.one_hot(labels, length.shape[1]).to(length.dtype)
    loss = (t * F.relu(m_plus - length).pow(2) + lam * (1 - t) * F.relu(length - m_minus).pow(2)).sum(1)
    return loss.mean() if reduction == "mean" else loss


def mask_capsules(v: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Zero every class capsule but one, flattened for the reconstruction decoder: the true class when `labels`
    is given (training), else the longest capsule (the prediction). [B, N_out, D] -> [B, N_out·D]."""
    index = labels if labels is not None else v.norm(dim=-1).argmax(1)
    mask = F.one_hot(index, v.shape[1]).to(v.dtype)
    return (v * mask.unsqueeze(-1)).flatten(1)


class PrimaryCapsules(nn.Module):
    """A convolution whose output channels are grouped into `capsules` types of `dim`-vectors at every
    position, squashed: [B, C, H, W] -> [B, capsules·H'·W', dim]."""

    def __init__(self, in_channels: int, capsules: int = 32, dim: int = 8, kernel_size: int = 9, stride: int = 2):
        super().__init__()
        self.capsules, self.dim = capsules, dim
        self.conv = nn.Conv2d(in_channels, capsules * dim, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        B, _, H, W = y.shape
        y = y.view(B, self.capsules, self.dim, H, W).permute(0, 1, 3, 4, 2).reshape(B, -1, self.dim)
        return squash(y)


class RoutingCapsules(nn.Module):
    """A layer of `out_capsules` capsules of size `out_dim` fed by `in_capsules` capsules of size `in_dim`
    through one transformation matrix W_ij per pair (û_j|i = W_ij u_i) and dynamic routing (`fused_routing`).
    W is stored [out_capsules, out_dim, in_dim, in_capsules], the layout the fused contractions read. As Eq. 2,
    s_j = Σ_i c_ij û_j|i has no bias; the official code adds a learned one (starting at 0.1) before the squash."""

    def __init__(self, in_capsules: int, in_dim: int, out_capsules: int, out_dim: int, iterations: int = 3,
                 init_std: float = 0.01):
        super().__init__()
        self.iterations = iterations
        self.W = nn.Parameter(init_std * torch.randn(out_capsules, out_dim, in_dim, in_capsules))

    def predictions(self, u: torch.Tensor) -> torch.Tensor:
        """û [B, N_in, N_out, D_out] (for inspection; `forward` never builds it)."""
        return torch.einsum("jdki,bik->bijd", self.W, u)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fused_routing(u, self.W, self.iterations)
