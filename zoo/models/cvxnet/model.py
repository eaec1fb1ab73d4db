"""CvxNet (Deng, Genova, Yazdani, Bouaziz, Hinton & Tagliasacchi, CVPR 2020): a shape as the union of K smooth
convexes, each the intersection of H half-spaces, decoded from one latent code.

In the paper's notation, with the official code's parametrisation and constants (the paper's full text was not
readable where this was written; section and equation numbers are therefore not cited):
- half-space h of convex k: H_h(x) = n_h·(x − c_k) + d_h, with the unit normal n_h from dims − 1 angles
  (tanh(·)·π: the 2-D angle, or the 3-D azimuth and altitude), the offset d_h = −0.5·sigmoid(·) ≤ 0 (so c_k lies
  inside its convex) and the convex's translation c_k;
- the smooth distance of convex k: Φ_k(x) = LogSumExp_h(δ_k H_h(x)) / δ_k, a soft maximum over its half-spaces
  whose smoothness δ_k = 50 + 250·sigmoid(·) is predicted per convex;
- the convex's indicator C_k(x) = sigmoid(−σ Φ_k(x)) with sharpness σ = 75, and the shape's
  O(x) = max_k C_k(x).
The decoder predicts, per shape, K smoothness terms, K·dims translations and K·H·dims half-space parameters from a
256-d latent code through dense layers of 1024, 1024 and 2048 leaky-ReLU units; the encoder is a ResNet-18 (V1, the
7x7 stride-2 stem with max-pool) whose pooled features are projected to the latent code (official `Resnet18`).

All K·H half-spaces are evaluated for all query points as one batched multiply-add, [B, N, dims] x
[B, dims, K·H]; nothing loops over convexes or planes.

The losses, at the official code's weights (`CvxNetLosses`; the names are the paper's, the code calls them
sample, overlap, center, balance and bbx losses):
- approximation: the squared error of O against the occupancy at uniform points in the box, plus 0.1 x that at
  points near the surface;
- decomposition: mean(relu(Σ_k C_k(x) − 2)²), evaluated at the query points and at the translations c_k
  (the official code appends the c_k to the query points), so that convexes do not pile up (weight 0.1);
- unique parametrisation: mean(d_h²), keeping the offsets small (weight 0.001);
- guidance: for each convex, its 20 largest indicator values among the inside points are pulled to 1, so that no
  convex is left empty (weight 0.01);
- localisation: the squared distance from each c_k to its nearest inside point, so that translations stay in the
  shape (weight 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.init import keras_init_
from zoo.nn.resnet import resnet_encoder

__all__ = ["ConvexDecoder", "ConvexParams", "CvxNet", "CvxNetLosses", "MultiConvex", "Occupancy", "cvxnet_losses"]


@dataclass
class ConvexParams:
    """One batch of decoded convexes: n [B, K, H, dims] unit normals, d [B, K, H] offsets (≤ 0), c [B, K, dims]
    translations, delta [B, K] smoothness."""
    n: torch.Tensor
    d: torch.Tensor
    c: torch.Tensor
    delta: torch.Tensor


@dataclass
class Occupancy:
    """The indicators at N query points: O [B, N] (the shape), C [B, K, N] (each convex), and `overlap`
    [B, N + K], Σ_k C_k at the query points followed by the translations (the decomposition loss's points)."""
    O: torch.Tensor
    C: torch.Tensor
    overlap: torch.Tensor


class MultiConvex(nn.Module):
    """The smooth union of convexes: raw decoder outputs -> `ConvexParams` -> indicators at points."""

    offset_scale = 0.5
    blend_lbound, blend_scale = 50.0, 250.0

    def __init__(self, dims: int = 3, K: int = 50, H: int = 25, sigma: float = 75.0):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        self.dims, self.K, self.H, self.sigma = dims, K, H, sigma

    @property
    def n_params(self) -> int:
        """Smoothness + translations + half-spaces: K + K·dims + K·H·dims."""
        return self.K * (1 + self.dims + self.H * self.dims)

    def split(self, beta: torch.Tensor) -> ConvexParams:
        """Raw parameters [B, n_params] (the official order: smoothness, translations, half-spaces) -> convexes."""
        K, H, D = self.K, self.H, self.dims
        blend, trans, planes = beta.split([K, K * D, K * H * D], dim=-1)
        planes = planes.reshape(-1, K, H, D)
        angles = torch.tanh(planes[..., :D - 1]) * math.pi
        if D == 2:
            n = torch.cat([angles.cos(), angles.sin()], -1)
        else:
            azimuth, altitude = angles.unbind(-1)
            n = torch.stack([altitude.sin() * azimuth.cos(), altitude.sin() * azimuth.sin(), altitude.cos()], -1)
        d = -torch.sigmoid(planes[..., D - 1]) * self.offset_scale
        delta = torch.sigmoid(blend) * self.blend_scale + self.blend_lbound
        return ConvexParams(n, d, trans.reshape(-1, K, D), delta)

    def phi(self, p: ConvexParams, x: torch.Tensor) -> torch.Tensor:
        """Φ_k(x) [B, K, N] at points x [B, N, dims]: LogSumExp_h(δ_k (n_h·(x − c_k) + d_h)) / δ_k.

        δ_k(n_h·(x − c_k) + d_h) = (δ_k n_h)·x + δ_k(d_h − n_h·c_k): one batched multiply-add over all K·H planes,
        laid out [B, N, K, H] so that the LogSumExp reduces over contiguous memory (`_LogSumExp`)."""
        B, K, H, D = p.n.shape
        delta = p.delta[:, :, None]
        w = (p.n * delta[..., None]).reshape(B, K * H, D)
        bias = (delta * (p.d - (p.n * p.c[:, :, None]).sum(-1))).reshape(B, 1, K * H)
        planes = torch.baddbmm(bias, x, w.transpose(1, 2)).view(B, -1, K, H)
        return (_LogSumExp.apply(planes) / p.delta[:, None]).transpose(1, 2)

    def forward(self, p: ConvexParams, x: torch.Tensor) -> Occupancy:
        N = x.shape[1]
        C_all = torch.sigmoid(-self.sigma * self.phi(p, torch.cat([x, p.c], 1)))
        C = C_all[..., :N]
        return Occupancy(C.amax(1), C, C_all.sum(1))


class _LogSumExp(torch.autograd.Function):
    """log Σ exp over the last dimension, as torch.logsumexp but about 3x faster on the CPU here: terms more than
    80 below the maximum (weights under e⁻⁸⁰ of the largest) are clamped there before `exp`, whose vectorised
    kernel is 4x slower on inputs that underflow, and the softmax weights are kept for the backward pass instead
    of recomputed (benchmarks/cvxnet.py)."""

    @staticmethod
    def forward(ctx, s: torch.Tensor) -> torch.Tensor:
        m = s.amax(-1, keepdim=True)
        e = torch.sub(s, m).clamp_min_(-80.0).exp_()
        z = e.sum(-1)
        ctx.save_for_backward(e, z)
        return m.squeeze(-1) + z.log()

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        e, z = ctx.saved_tensors
        return e * (g / z).unsqueeze(-1)


class ConvexDecoder(nn.Sequential):
    """Latent code -> raw convex parameters: dense 1024, 1024, 2048 with leaky ReLU (slope 0.2, TensorFlow's
    default), then a linear layer (official `Decoder`)."""

    def __init__(self, latent: int, n_params: int, hidden: tuple[int, ...] = (1024, 1024, 2048)):
        layers, width = [], latent
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
            width = h
        super().__init__(*layers, nn.Linear(width, n_params))


class CvxNet(nn.Module):
    """Image [B, C, H, W] -> latent code (ResNet-18 with its widths x `width`, linear) -> convexes;
    `forward(images, points)` gives the `Occupancy` at points [B, N, dims] and the decoded `ConvexParams`.
    `init="keras"` starts from the official code's initialisation (Keras' defaults), "torch" from PyTorch's
    layer defaults and timm's ResNet (each residual block's last BN scale at 0): at "torch" the first decoded
    convexes sit near the centre (spread of the translations 0.02 against 0.36 on 28 x 28 silhouettes) and are
    close to single half-planes."""

    def __init__(self, dims: int = 3, K: int = 50, H: int = 25, latent: int = 256, in_chans: int = 3,
                 sigma: float = 75.0, hidden: tuple[int, ...] = (1024, 1024, 2048), width: float = 1.0,
                 init: str = "keras"):
        super().__init__()
        if init not in ("keras", "torch"):
            raise ValueError(f"init={init!r}: 'keras' (the official code's Keras defaults) or 'torch' (PyTorch's and "
                             "timm's)")
        self.encoder = resnet_encoder(18, width=width, in_chans=in_chans, cifar_stem=False)
        self.to_latent = nn.Linear(self.encoder.num_features, latent)
        self.convexes = MultiConvex(dims, K, H, sigma)
        self.decoder = ConvexDecoder(latent, self.convexes.n_params, tuple(hidden))
        if init == "keras":  # Glorot-uniform kernels, zero biases, BN scale 1 (timm zeroes each block's last)
            keras_init_(self)

    def encode(self, images: torch.Tensor) -> ConvexParams:
        return self.convexes.split(self.decoder(self.to_latent(self.encoder(images))))

    def forward(self, images: torch.Tensor, points: torch.Tensor) -> tuple[Occupancy, ConvexParams]:
        p = self.encode(images)
        return self.convexes(p, points), p


@dataclass
class CvxNetLosses:
    """The five loss terms (unweighted) and their weighted sum `total`."""
    approximation: torch.Tensor
    decomposition: torch.Tensor
    unique: torch.Tensor
    guidance: torch.Tensor
    localisation: torch.Tensor
    total: torch.Tensor


def cvxnet_losses(occ: Occupancy, p: ConvexParams, x: torch.Tensor, labels: torch.Tensor, n_box: int,
                  w_decomposition: float = 0.1, w_unique: float = 0.001, w_guidance: float = 0.01,
                  w_localisation: float = 1.0, w_surface: float = 0.1, guidance_k: int = 20) -> CvxNetLosses:
    """The training loss at points x [B, N, dims] with occupancy labels [B, N] in {0, 1}; the first `n_box`
    points are the uniform box samples, the rest the near-surface ones."""
    sq = (labels - occ.O).square()
    approximation = sq[:, :n_box].mean() if n_box else sq.new_zeros(())
    if n_box < sq.shape[1]:
        approximation = approximation + w_surface * sq[:, n_box:].mean()
    decomposition = F.relu(occ.overlap - 2.0).square().mean()
    unique = p.d.square().mean()
    inside = labels > 0.5
    top = (occ.C * labels[:, None]).topk(min(guidance_k, labels.shape[1]), dim=-1).values
    guidance = (1.0 - top).square().mean()
    dist = (p.c[:, :, None] - x[:, None]).square().sum(-1)
    localisation = dist.masked_fill(~inside[:, None], 1e5).amin(-1).mean()
    total = (approximation + w_decomposition * decomposition + w_unique * unique + w_guidance * guidance
             + w_localisation * localisation)
    return CvxNetLosses(approximation, decomposition, unique, guidance, localisation, total)
