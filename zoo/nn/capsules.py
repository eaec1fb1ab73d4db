"""Capsules with dynamic routing (Sabour, Frosst & Hinton 2017), shared by DARCCC, "Detecting and
Diagnosing Adversarial Images" and "Deflecting Adversarial Attacks". Every operation is batched over
examples, input capsules and output capsules: no Python loop except the r routing iterations.

Shapes: u [B, N_in, D_in] input capsules; û [B, N_in, N_out, D_out] predictions; v [B, N_out, D_out].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["squash", "dynamic_routing", "margin_loss", "mask_capsules", "PrimaryCapsules", "RoutingCapsules"]


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


def margin_loss(v: torch.Tensor, labels: torch.Tensor, m_plus: float = 0.9, m_minus: float = 0.1,
                lam: float = 0.5) -> torch.Tensor:
    """Eq. 4: Σ_k T_k max(0, m⁺ − ‖v_k‖)² + λ (1 − T_k) max(0, ‖v_k‖ − m⁻)², summed over classes, batch mean."""
    length = v.norm(dim=-1)
    t = F.one_hot(labels, length.shape[1]).to(length.dtype)
    loss = t * F.relu(m_plus - length).pow(2) + lam * (1 - t) * F.relu(length - m_minus).pow(2)
    return loss.sum(1).mean()


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
    through one transformation matrix W_ij per pair (û_j|i = W_ij u_i) and dynamic routing."""

    def __init__(self, in_capsules: int, in_dim: int, out_capsules: int, out_dim: int, iterations: int = 3,
                 init_std: float = 0.01):
        super().__init__()
        self.iterations = iterations
        self.W = nn.Parameter(init_std * torch.randn(in_capsules, out_capsules, out_dim, in_dim))

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u_hat = torch.einsum("ijdk,bik->bijd", self.W, u)
        return dynamic_routing(u_hat, self.iterations)
