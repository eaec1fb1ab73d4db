"""The Forward-Forward algorithm (Hinton, 2022, arXiv 2212.13345): the supervised version of §3.3 and the
unsupervised version of §3.2, with fully connected or locally connected layers.

Each layer has its own objective: the goodness G = Σ_j h_j² of its ReLU activities should be high for
positive data and low for negative data, through p(positive) = σ(G − θ). A layer passes on only the
*direction* of its activity vector (length normalisation), detached, so no gradient flows between
layers.

- Supervised (§3.3): positive data is an image with its correct label written into the first C pixels,
  negative data the same image with a wrong label. At test time the label with the largest goodness,
  accumulated over all but the first hidden layer, wins; or a linear softmax reads the activities produced
  by a neutral label.
- Unsupervised (§3.2): positive data is a real image, negative data a *hybrid* of two real images mixed
  through a mask of large random regions (`hybrid_masks`), which keeps short-range correlations and breaks
  the long-range ones that make up shapes. A linear softmax then reads the normalised activities of the
  last three hidden layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.local import LocallyConnected2d

#: the blur filter of §3.2, applied along both image axes
BLUR_1D = (0.25, 0.5, 0.25)


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


class FFStack(nn.Module):
    """A Forward-Forward network: `layers[l]` maps the normalised, detached activity of layer l−1 (flat
    vectors [B, N_{l−1}]) to layer l's pre-activations [B, N_l]."""

    def __init__(self, layers: list[nn.Module], relu_full_grad: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(layers)
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


class FFNet(FFStack):
    """A fully connected Forward-Forward network: in_features -> hidden[0] -> ... (nn.Linear layers)."""

    def __init__(self, in_features: int, hidden: list[int], relu_full_grad: bool = True):
        sizes = [in_features, *hidden]
        super().__init__([nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])], relu_full_grad)


class FlatLocallyConnected(LocallyConnected2d):
    """A locally connected layer on flat activity vectors: [B, C_in·H·W] -> [B, C_out·H_out·W_out]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.view(x.shape[0], self.in_channels, *self.in_size)).flatten(1)


class LocalFFNet(FFStack):
    """A Forward-Forward network of local receptive fields without weight sharing (§3.2, and the CIFAR-10
    experiments): hidden layer l is a `channels[l]` x H x W topographic map whose units each see a
    `kernel_size` x `kernel_size` patch of the layer below ("same" padding)."""

    def __init__(self, in_channels: int, image_size: int, channels: list[int], kernel_size: int,
                 relu_full_grad: bool = True):
        ins = [in_channels, *channels[:-1]]
        super().__init__([FlatLocallyConnected(a, b, image_size, kernel_size, padding=kernel_size // 2)
                          for a, b in zip(ins, channels)], relu_full_grad)


def blur_matrix(n: int, passes: int, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """The n x n operator of `passes` rounds of the [1/4, 1/2, 1/4] filter along one image axis, edge pixels
    replicated: B^passes, where B is tridiagonal with its corner entries 3/4 (the replicated neighbour)."""
    b = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(n)
    b[idx, idx] = BLUR_1D[1]
    b[idx[1:], idx[:-1]] = BLUR_1D[0]
    b[idx[:-1], idx[1:]] = BLUR_1D[2]
    b[0, 0] += BLUR_1D[0]
    b[-1, -1] += BLUR_1D[2]
    return torch.linalg.matrix_power(b, passes).to(dtype=dtype, device=device)


def blur(masks: torch.Tensor, passes: int) -> torch.Tensor:
    """`passes` rounds of the [1/4, 1/2, 1/4] filter along both axes of masks [..., H, W], borders replicated.
    Blurring is linear and the rounds commute, so all of them are two matrix products over the whole batch:
    B_H^passes · m · (B_W^passes)ᵀ (equal to `passes` 3x3 convolutions, and far faster on CPU)."""
    h, w = masks.shape[-2:]
    rows = blur_matrix(h, passes, masks.dtype, masks.device)
    cols = blur_matrix(w, passes, masks.dtype, masks.device)
    return rows @ masks @ cols.T


def hybrid_masks(n: int, size: tuple[int, int], passes: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """§3.2's masks [n, 1, H, W]: a random bit image, blurred `passes` times, thresholded at 0.5 — regions of
    ones and zeros a few pixels across."""
    bits = (torch.rand(n, 1, *size, generator=generator, device=device) < 0.5).float()
    return (blur(bits, passes) > 0.5).float()


def hybrid_images(x: torch.Tensor, masks: torch.Tensor, shift: int) -> torch.Tensor:
    """Negative data of §3.2: x·m + x'·(1 − m), where x' is the image `shift` places further along the batch
    (a different image for 0 < shift < B); masks [B, 1, H, W] are shared by all channels."""
    return x * masks + x.roll(shift, dims=0) * (1 - masks)


def readout(hs: list[torch.Tensor], last: int = 3) -> torch.Tensor:
    """The linear classifier's input: the length-normalised activities of the `last` hidden layers, joined."""
    return torch.cat([length_normalise(h) for h in hs[-last:]], dim=1)


class _AddGrad(torch.autograd.Function):
    """Identity forward; backward adds a fixed tensor `extra` (broadcast over the batch) to the gradient."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(extra)
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (extra,) = ctx.saved_tensors
        return grad + extra.to(grad.dtype), None


class PeerNorm(nn.Module):
    """Peer normalisation as in Hinton's Matlab code (ffnew.m): each unit's mean activity on positive data
    is tracked, m_j ← 0.9·m_j + 0.1·mean_batch(h_j), and λ·(m̄ − m_j), with m̄ the layer's average of the m_j,
    is added to the ascent gradient of every positive example's activity h_j, so units less active than
    their peers are pushed up and busier ones down. It is a gradient term, not the gradient of a loss: the
    Matlab code adds it straight to dC/d(total input), ungated by the ReLU, and divides by the batch size
    like the goodness gradient. Here the forward pass is the identity and the backward pass adds
    λ·(m_j − m̄)/B (the descent sign) to dL/dh_j of each of the B examples; with the identity-gradient ReLU
    that reaches the total input unchanged, as in the Matlab code. Our goodness loss (a mean over 2B
    examples of −log σ(±(G − θ))) has the Matlab code's per-example scale, (1 − p)·h_j/B, so λ = 0.03 means
    what it means there. The running means start equal (the Matlab code uses 0.5, here 0): only their
    differences enter, and those do not depend on the common start value."""

    def __init__(self, units: int, strength: float = 0.03, momentum: float = 0.9):
        super().__init__()
        self.strength = strength
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(units))

    def forward(self, h_pos: torch.Tensor) -> torch.Tensor:
        """Returns h_pos [B, N] unchanged; in training, updates the running means and attaches the term to
        its gradient."""
        if not self.training or self.strength == 0:
            return h_pos
        with torch.no_grad():
            mean = self.running_mean * self.momentum + h_pos.float().mean(0) * (1 - self.momentum)
            self.running_mean.copy_(mean)
            extra = self.strength * (mean - mean.mean()) / h_pos.shape[0]
        return _AddGrad.apply(h_pos, extra)
