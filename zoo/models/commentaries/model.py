"""Teaching with Commentaries (Raghu, Raghu, Kornblith, Duvenaud & Hinton, ICLR 2021, arXiv 2011.03037): the
networks and the two ways of learning a commentary φ, as plain functions of tensors.

A commentary is meta-information that changes how a student with weights θ trains: the student minimises a training
loss L_T(θ, φ), and φ is chosen so that the trained student θ*(φ) has a low validation loss L_V(θ*(φ)).

Example weighting (§3.1), learned by backpropagation through training (Alg. 1). A teacher network gives each
training example x_i at inner step t a weight w_φ(x_i, t/N) ∈ (0, 1); the student takes N inner steps of Adam on
L_T = Σ_i w_φ(x_i, t/N) · CE(f_θ(x_i), y_i), starting every time from the same fixed initialisation θ₀, and the
teacher takes one Adam step on ∂L_V(θ_N)/∂φ, obtained by differentiating through all N Adam updates (second order:
each update's gradient is built with `create_graph=True`). The unrolled graph keeps every step's activations, so
memory grows linearly with N. The student is a weight dictionary run through `torch.func.functional_call`, the
successor of the `higher` library that the official code used.

Label-dependent blending (§3.2), learned by implicit differentiation (Alg. 2). φ is a C×C matrix; an example x_i
with label y_i is blended with a partner x_j (a random permutation of the batch) as
    x̃ = λ x_i + (1 − λ) x_j,   λ = λ_φ(y_i, y_j) = 1 − ½·σ(φ[y_i, y_j]) ∈ [½, 1],
and the loss mixes the labels in the same proportion, λ·CE(f(x̃), y_i) + (1 − λ)·CE(f(x̃), y_j) (the official
parameterisation, started at φ = −1, λ ≈ 0.87). At a minimum of L_T the implicit function theorem gives
    dL_V/dφ = ∂L_V/∂φ − (∂²L_T/∂φ∂θ) H⁻¹ ∂L_V/∂θ,   H = ∂²L_T/∂θ²,
and H⁻¹ is replaced by the truncated Neumann series α Σ_{k=0}^{K} (I − αH)^k (Lorraine, Vicol & Duvenaud 2020),
α the student's learning rate, K Neumann terms (the paper: 1). Only Hessian-vector products are formed, so the
memory does not depend on how long the student has trained.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]


class ConvTrunk(nn.Module):
    """The official student/teacher trunk: conv 5x5 stride 2 → BN → ReLU → max-pool 3/2, then conv 3x3 stride 2
    (padding 2) → BN → ReLU → max-pool 3/2, flattened (64 features for 28x28 inputs and 64 channels).
    `batch_stats_only`: BN always normalises with the batch's statistics and keeps no running averages (the
    teacher, which the official code runs in training mode whenever it is used)."""

    def __init__(self, in_channels: int, image_size: int, channels: Sequence[int], batch_stats_only: bool = False):
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"the commentary networks have two conv blocks; got channels={list(channels)}")
        c1, c2 = channels
        track = not batch_stats_only
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, stride=2, padding=2), nn.BatchNorm2d(c1, track_running_stats=track),
            nn.ReLU(), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(c1, c2, 3, stride=2, padding=2), nn.BatchNorm2d(c2, track_running_stats=track),
            nn.ReLU(), nn.MaxPool2d(3, stride=2), nn.Flatten())
        with torch.no_grad():
            self.out_features = self.layers.eval()(torch.zeros(2, in_channels, image_size, image_size)).shape[1]
        self.layers.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Student(nn.Module):
    """The classifier being taught: the trunk and a linear layer to class scores."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: Sequence[int] = (32, 64),
                 num_classes: int = 10):
        super().__init__()
        self.trunk = ConvTrunk(in_channels, image_size, channels)
        self.head = nn.Linear(self.trunk.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class WeightingTeacher(nn.Module):
    """The commentary network of Alg. 1: w_φ(x, t/N) = σ(linear(trunk([x, t/N]))), with the training progress
    t/N appended to the image as a constant extra channel (`curriculum`; False: w_φ(x) alone)."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: Sequence[int] = (32, 64),
                 curriculum: bool = True):
        super().__init__()
        self.curriculum = curriculum
        self.trunk = ConvTrunk(in_channels + int(curriculum), image_size, channels, batch_stats_only=True)
        self.head = nn.Linear(self.trunk.out_features, 1)

    def forward(self, x: torch.Tensor, progress: float) -> torch.Tensor:
        """Per-example weights [B] in (0, 1) for images x [B, C, H, W] at training progress t/N."""
        if self.curriculum:
            x = torch.cat([x, x.new_full((x.shape[0], 1, *x.shape[2:]), float(progress))], 1)
        return torch.sigmoid(self.head(self.trunk(x))).squeeze(1)


# ---------------------------------------------------------------- Alg. 1: backpropagation through training

def adam_step(params: Params, grads: Sequence[torch.Tensor], state: dict[str, list[torch.Tensor]], step: int,
              lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Params:
    """One differentiable Adam update (torch.optim.Adam's arithmetic, no weight decay); `state` holds the moment
    lists "m" and "v" (replaced, not mutated, so the graph keeps every step) and `step` counts from 1. The second
    moment is clamped at the smallest normal float before the square root, so a gradient that is exactly zero
    gives a zero derivative rather than ∞ · 0."""
    b1, b2 = betas
    m = [b1 * mi + (1 - b1) * g for mi, g in zip(state["m"], grads)]
    v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(state["v"], grads)]
    state["m"], state["v"] = m, v
    c1, c2 = 1 - b1**step, 1 - b2**step
    return {k: p - lr * (mi / c1) / ((vi / c2).clamp_min(torch.finfo(vi.dtype).tiny).sqrt() + eps)
            for (k, p), mi, vi in zip(params.items(), m, v)}


def weighted_loss(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i · CE_i: the official inner objective is the weighted *sum* over the batch."""
    return (w * F.cross_entropy(logits, y, reduction="none")).sum()


def unroll(student: nn.Module, params: Params, buffers: Params, xs: torch.Tensor, ys: torch.Tensor,
           weight: Callable[[torch.Tensor, int], torch.Tensor], lr: float, create_graph: bool = True,
           betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> tuple[Params, torch.Tensor]:
    """N = len(xs) inner Adam steps of the student from `params` on batches xs [N, b, ...], ys [N, b] with example
    weights `weight(x, t)`; returns the final weights (functions of the teacher's weights when `create_graph`) and
    the inner losses [N]. `buffers` (BN running statistics) are updated in place, as in a plain training step."""
    names = list(params)
    state = {"m": [torch.zeros_like(p) for p in params.values()], "v": [torch.zeros_like(p) for p in params.values()]}
    losses = []
    for t in range(len(xs)):  # the unroll is sequential: step t+1 needs step t's weights
        logits = functional_call(student, {**params, **buffers}, (xs[t],))
        loss = weighted_loss(logits, ys[t], weight(xs[t], t))
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph)
        params = adam_step(params, grads, state, t + 1, lr, betas, eps)
        losses.append(loss.detach())
    return params, torch.stack(losses)


def validation_loss(student: nn.Module, params: Params, buffers: Params, x: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor:
    """L_V: the unweighted mean cross-entropy of the student `params` on held-out images, BN on batch statistics
    (the student is in training mode, as in the official teacher step); `buffers` are not changed."""
    scratch = {k: b.clone() for k, b in buffers.items()}
    return F.cross_entropy(functional_call(student, {**params, **scratch}, (x,)), y)


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run fn and count the bytes of the distinct storages that autograd saves for the backward pass while it
    runs: the memory the graph holds, which for an unroll grows with its length."""
    seen: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        seen[(s.data_ptr(), str(t.device))] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


# ---------------------------------------------------------------- Alg. 2: implicit differentiation

def blend_coefficients(phi: torch.Tensor, y: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """λ_i = 1 − ½·σ(φ[y_i, y_partner(i)]) ∈ [½, 1], the weight kept on example i."""
    return 1 - 0.5 * torch.sigmoid(phi[y, y[partner]])


def blend(x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """x̃_i = λ_i x_i + (1 − λ_i) x_partner(i)."""
    lam = lam.view(-1, *([1] * (x.dim() - 1)))
    return lam * x + (1 - lam) * x[partner]


def blended_loss(logits: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """mean_i λ_i CE(x̃_i, y_i) + (1 − λ_i) CE(x̃_i, y_partner(i))."""
    return (lam * F.cross_entropy(logits, y, reduction="none")
            + (1 - lam) * F.cross_entropy(logits, y[partner], reduction="none")).mean()


def neumann_hypergradient(train_loss: torch.Tensor, val_loss: torch.Tensor, params: Sequence[torch.Tensor],
                          hparams: Sequence[torch.Tensor], lr: float, terms: int) -> list[torch.Tensor]:
    """dL_V/dφ ≈ −(∂²L_T/∂φ∂θ) · α Σ_{k=0}^{K} (I − αH)^k ∂L_V/∂θ (L_V does not depend on φ directly here).

    `train_loss` and `val_loss` are graphs over the student weights `params` (train_loss also over `hparams`);
    K = `terms` Hessian-vector products with H = ∂²L_T/∂θ², α = `lr`. The series converges to H⁻¹ when
    0 < α < 2/λ_max(H)."""
    g_train = torch.autograd.grad(train_loss, params, create_graph=True)
    v = [g.detach() for g in torch.autograd.grad(val_loss, params)]
    term, total = v, list(v)
    for _ in range(terms):  # (I − αH)^k v, one Hessian-vector product each
        hv = torch.autograd.grad(g_train, params, grad_outputs=term, retain_graph=True)
        term = [t - lr * h for t, h in zip(term, hv)]
        total = [s + t for s, t in zip(total, term)]
    mixed = torch.autograd.grad(g_train, hparams, grad_outputs=[lr * s for s in total])
    return [-m for m in mixed]
