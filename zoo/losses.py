"""Losses shared by several papers. Functions of logits/features, batch-mean reduction."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distillation_loss", "confidence_penalty", "entropy", "nt_xent", "soft_nearest_neighbor_loss",
           "transducer_loss"]


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

    `optimize_temperature`: writes T = T₀/t, takes one gradient step t ← 1 − 0.1 ∂L/∂t from t = 1 on this
    batch, and returns the loss at the new temperature (the step itself is not differentiated). The reference
    code keeps t between batches (a persistent variable); this stateless form restarts it at 1 on every call,
    so it is that update only on a first batch. zoo.models.snnl keeps t per layer, as the reference does."""
    x = features.flatten(1)
    if optimize_temperature:
        t = torch.ones((), dtype=x.dtype, device=x.device, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(_snnl(x.detach(), labels, temperature / t, cosine, eps), t)
        temperature = temperature / (1 - 0.1 * grad.detach())
    return _snnl(x, labels, temperature, cosine, eps)


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' rows concatenated in rank order; backward sums every rank's gradient for this rank's rows (each
    rank's loss reads all of them) and returns this rank's slice. Written here rather than taken from
    torch.distributed.nn.functional.all_gather, which is deprecated and, under gloo, left a thread that aborted
    the process at exit in about one run in ten."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        world, ctx.rank, ctx.n = torch.distributed.get_world_size(), torch.distributed.get_rank(), z.shape[0]
        parts = [torch.empty_like(z) for _ in range(world)]
        torch.distributed.all_gather(parts, z.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        torch.distributed.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float, gather: bool = True) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1) as the official objective computes it: projections z_a, z_b
    [N, d] of the two views of N images are L2-normalised; each row of view a is scored against every row of view
    b and every other row of view a (its own similarity masked out, not merely subtracted, so no gradient flows
    through it), at temperature τ, with its partner in view b the target; likewise for view b; the loss is the sum
    of the two directions' batch means (the official `loss_a + loss_b`, twice the mean over the 2N anchors).

    Under torch.distributed (`gather`, more than one process) the negatives are the global batch: every rank's
    projections are all-gathered with their gradients (the backward sums the gradients each rank sends back), and
    each rank's loss covers its own N anchors. With DDP averaging the weight gradients, R ranks of N images then
    train exactly as one process with the R·N images would. Every rank must hold the same N (DistributedSampler
    gives equal shares)."""
    za, zb = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    n, rank = za.shape[0], 0
    all_a, all_b = za, zb
    if gather and torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        rank = torch.distributed.get_rank()
        all_a, all_b = _GatherWithGrad.apply(za), _GatherWithGrad.apply(zb)
    own = rank * n + torch.arange(n, device=za.device)
    mask = F.one_hot(own, all_a.shape[0]).bool()
    logits_ab, logits_aa = za @ all_b.T / temperature, (za @ all_a.T / temperature).masked_fill(mask, float("-inf"))
    logits_ba, logits_bb = zb @ all_a.T / temperature, (zb @ all_b.T / temperature).masked_fill(mask, float("-inf"))
    return (F.cross_entropy(torch.cat([logits_ab, logits_aa], 1), own)
            + F.cross_entropy(torch.cat([logits_ba, logits_bb], 1), own))


def transducer_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                    target_lengths: torch.Tensor, blank: int = 0, reduction: str = "mean") -> torch.Tensor:
    """The RNN transducer's negative log-likelihood (Graves 2012, "Sequence Transduction with Recurrent Neural
    Networks", §2; Graves, Mohamed & Hinton 2013, §2.3): −log Σ over all alignments of the label sequence.

    logits [B, T, U+1, V]: the joint network's output for input frame t after the first u labels; targets [B, U]
    (padded), logit_lengths [B] (T_b), target_lengths [B] (U_b). The forward variable
        α(t, u) = logaddexp(α(t−1, u) + log ∅(t−1, u), α(t, u−1) + log y(t, u−1)),   α(0, 0) = 0,
    with ∅ the blank's and y the next label's log-probability, gives −log P(y|x) = −(α(T_b−1, U_b) + log ∅(T_b−1,
    U_b)). The cells of one anti-diagonal t + u = n depend only on the previous one, so the recursion runs over the
    T + U − 1 diagonals, each a tensor operation over the batch and the frames (no loop over t or u themselves);
    autograd gives the gradient. reduction: "mean" (over the batch, as F.ctc_loss divides by target length only
    when asked), "sum" or "none"."""
    B, T, U1, V = logits.shape
    if targets.shape[1] + 1 != U1:
        raise ValueError(f"logits hold U+1 = {U1} label positions but targets have U = {targets.shape[1]}")
    lp = (logits if logits.dtype == torch.float64 else logits.float()).log_softmax(-1)
    blank_lp = lp[..., blank]                                                     # [B, T, U+1]
    U = U1 - 1
    emit_lp = lp[:, :, :U].gather(3, targets.long()[:, None, :, None].expand(B, T, U, 1)).squeeze(3)  # [B, T, U]
    neg = torch.finfo(lp.dtype).min / 4  # "−inf" that stays finite through additions, so gradients stay defined
    t = torch.arange(T, device=lp.device)
    diagonals = [torch.full((B, T), neg, device=lp.device, dtype=lp.dtype).index_fill(1, t[:1], 0.0)]
    for n in range(1, T + U):
        u = n - t                                                                 # the column of each frame's cell
        prev = diagonals[-1]
        # from (t−1, u) by a blank: the previous diagonal shifted one frame on
        ok_b = (u >= 0) & (u <= U) & (t >= 1)
        from_blank = (torch.cat([prev.new_full((B, 1), neg), prev[:, :-1]], 1)
                      + blank_lp[:, (t - 1).clamp(min=0), u.clamp(0, U)])
        # from (t, u−1) by emitting label u
        ok_e = (u >= 1) & (u <= U)
        from_emit = prev + emit_lp[:, t, (u - 1).clamp(0, max(U - 1, 0))] if U else prev
        a = torch.logaddexp(torch.where(ok_b, from_blank, neg), torch.where(ok_e, from_emit, neg))
        diagonals.append(torch.where(ok_b | ok_e, a, neg))
    alpha = torch.stack(diagonals, 1)                                             # [B, T+U, T]: alpha[b, t+u, t]
    tb, ub = logit_lengths.long() - 1, target_lengths.long()
    rows = torch.arange(B, device=lp.device)
    ll = alpha[rows, tb + ub, tb] + blank_lp[rows, tb, ub]
    loss = -ll
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
