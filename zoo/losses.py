"""Losses shared by several papers. Functions of logits/features, batch-mean reduction."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distillation_loss", "confidence_penalty", "entropy", "soft_nearest_neighbor_loss"]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-target cross-entropy of Hinton, Vinyals & Dean (2015, §2), scaled by T² so its gradients keep
    the magnitude of the hard-target loss when T changes: T² · mean_b Σ_c −softmax(t/T)_c log softmax(s/T)_c.
    The teacher is a constant target (detached)."""
    T = float(temperature)
    target = F.softmax(teacher_logits.detach() / T, dim=-1)
    return -(target * F.log_softmax(student_logits / T, dim=-1)).sum(-1).mean() * T * T


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) per row, from log-probabilities (no log 0)."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def confidence_penalty(logits: torch.Tensor, beta: float, hinge: float | None = None) -> torch.Tensor:
    """The term Pereyra et al. (2017) add to the cross-entropy: −β·H(p(y|x)), batch mean; with `hinge` Γ,
    β·max(0, Γ − H), which only penalises outputs whose entropy is below Γ."""
    h = entropy(logits)
    return beta * (F.relu(hinge - h) if hinge is not None else -h).mean()


def _snnl(x: torch.Tensor, labels: torch.Tensor, temperature: torch.Tensor | float, cosine: bool,
          eps: float) -> torch.Tensor:
    if cosine:
        x = F.normalize(x, dim=1)
        d = 1 - x @ x.T
    else:
        d = torch.cdist(x, x).pow(2)
    self_mask = torch.eye(len(x), dtype=torch.bool, device=x.device)
    logits = (-d / temperature).masked_fill(self_mask, float("-inf"))
    same = (labels[:, None] == labels[None, :]) & ~self_mask
    log_den = torch.logsumexp(logits, dim=1)
    log_num = torch.logsumexp(logits.masked_fill(~same, float("-inf")), dim=1)
    return -torch.log(eps + (log_num - log_den).exp()).mean()


def soft_nearest_neighbor_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float,
                               cosine: bool = False, eps: float = 1e-5,
                               optimize_temperature: bool = False) -> torch.Tensor:
    """Soft nearest neighbour loss (Frosst, Papernot & Hinton 2019, eq. 1): the mean over i of
    −log( Σ_{j≠i, y_j=y_i} e^{−d_ij/T} / Σ_{k≠i} e^{−d_ik/T} ), d the squared Euclidean (or cosine) distance.
    Low values: classes are far apart; high values: entangled. Computed in log space; `eps` bounds the loss
    of an example with no same-class partner in the batch, as in the reference implementation.

    `optimize_temperature`: the reference code's variant, which writes T = T₀/t, takes one gradient step
    t ← 1 − 0.1 ∂L/∂t at t = 1 on this batch, and returns the loss at the new temperature (the step itself
    is not differentiated)."""
    x = features.flatten(1)
    if optimize_temperature:
        t = torch.ones((), dtype=x.dtype, device=x.device, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(_snnl(x.detach(), labels, temperature / t, cosine, eps), t)
        temperature = temperature / (1 - 0.1 * grad.detach())
    return _snnl(x, labels, temperature, cosine, eps)
