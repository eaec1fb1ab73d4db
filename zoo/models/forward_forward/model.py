"""The Forward-Forward algorithm (Hinton, 2022, arXiv 2212.13345): the supervised version of §3.3.

Each layer has its own objective: the goodness G = Σ_j h_j² of its ReLU activities should be high for
positive data (an image with its correct label written into the first C pixels) and low for negative
data (the same image with a wrong label), through p(positive) = σ(G − θ). A layer passes on only the
*direction* of its activity vector (length normalisation), detached, so no gradient flows between
layers. At test time the label with the largest goodness, accumulated over all but the first hidden
layer, wins; or a linear softmax reads the activities produced by a neutral label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def overlay_label(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Replace the first `num_classes` pixels of flat images `x` [B, D] by the one-hot label `y` [B]."""
    return torch.cat([F.one_hot(y, num_classes).to(x.dtype), x[:, num_classes:]], dim=1)


def overlay_neutral(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The neutral label of §3.3: every label pixel set to 1/C."""
    return torch.cat([x.new_full((x.shape[0], num_classes), 1.0 / num_classes), x[:, num_classes:]], dim=1)


def length_normalise(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Divide each vector by its root mean square, so the next layer sees only its direction.
    The norm is taken in float32 even under bf16/fp16 autocast."""
    return z / (z.float().pow(2).mean(dim=-1, keepdim=True).sqrt() + eps).to(z.dtype)


def goodness(h: torch.Tensor) -> torch.Tensor:
    """G = Σ_j h_j² over the units of one layer: [..., N] -> [...], in float32: with thousands of units,
    G is compared with θ ≈ N and across labels, differences half precision cannot resolve."""
    return h.float().pow(2).sum(dim=-1)


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, theta: float) -> torch.Tensor:
    """The layer-local logistic loss: −log σ(G⁺ − θ) − log(1 − σ(G⁻ − θ)), averaged over both halves."""
    logits = torch.cat([g_pos, g_neg]) - theta
    target = torch.cat([torch.ones_like(g_pos), torch.zeros_like(g_neg)])
    return F.binary_cross_entropy_with_logits(logits, target)


class _ReLUFullGrad(torch.autograd.Function):
    """ReLU forward, identity backward: the Matlab reference code's choice (kept by loeweX's port), which
    lets units that are off for a negative example still be pushed down."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class FFNet(nn.Module):
    """A fully connected Forward-Forward network: `layers[l]` maps the normalised activity of layer l−1."""

    def __init__(self, in_features: int, hidden: list[int], relu_full_grad: bool = True):
        super().__init__()
        sizes = [in_features, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.relu_full_grad = relu_full_grad

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activities h_l [B, N_l] of every layer; each layer's input is detached and length-normalised."""
        hs, z = [], x
        for layer in self.layers:
            a = layer(length_normalise(z.detach()))
            z = _ReLUFullGrad.apply(a) if self.relu_full_grad else F.relu(a)
            hs.append(z)
        return hs

    def label_goodness(self, x: torch.Tensor, num_classes: int, skip_first: bool = True) -> torch.Tensor:
        """Accumulated goodness [B, C] of every candidate label, in one batched pass over B·C inputs."""
        B = x.shape[0]
        labels = torch.arange(num_classes, device=x.device).repeat_interleave(B)
        hs = self(overlay_label(x.repeat(num_classes, 1), labels, num_classes))
        used = hs[1:] if skip_first and len(hs) > 1 else hs
        return torch.stack([goodness(h) for h in used]).sum(0).view(num_classes, B).T


class PeerNorm(nn.Module):
    """Peer normalisation (the reference code's regulariser): a running mean of each unit's activity on
    positive data, pulled towards the layer's average so no unit stays always on or always off."""

    def __init__(self, units: int, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(units))

    def forward(self, h_pos: torch.Tensor) -> torch.Tensor:
        mean = self.running_mean * self.momentum + h_pos.mean(0) * (1 - self.momentum)
        if self.training:
            self.running_mean.copy_(mean.detach())
        return (mean.mean() - mean).pow(2).mean()
