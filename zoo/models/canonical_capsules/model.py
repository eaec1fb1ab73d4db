"""Canonical Capsules (Sun, Tagliasacchi, Deng, Sabour, Yazdani, Hinton & Yi, NeurIPS 2021, arXiv 2012.04718), as the
official PyTorch code (canonical-capsules/canonical-capsules, default configuration) builds it.

A point cloud P (N points in d = 2 or 3 dimensions) is decomposed into K capsules by an attention map A [K, N] (a
softmax over capsules at every point) that a permutation-equivariant network computes:

- ACNe (attentive context normalisation): 1x1 layers whose features are normalised per point by K weighted
  statistics, x ↦ Σ_k a_k (x − μ_k) / σ_k with μ_k, σ_k the a_k-weighted mean and deviation over the points;
- each capsule's pose is its keypoint μ_k = Σ_n Ā_kn p_n and its descriptor β_k = Σ_n Ā_kn f_n, with Ā the attention
  normalised over points (the sum clamped at 1e-3, as the official code).

Training is Siamese: two random rigid poses (R_a, t_a), (R_b, t_b) of the same cloud. The capsule network learns
from them by
- equivariance: the keypoints of view a, moved by the relative pose, land on those of view b (weight 5);
- localisation: each capsule's points stay near its keypoint (Σ_k tr Cov_k, weight 1);
- equilibrium: capsules hold similar attention mass (variance over k of Σ_n A_kn, weight 1e-3);
- invariance: the descriptors of the two views agree (mean squared difference, weight 1);
- canonical: a network 𝒦 regresses canonical keypoints k̄ from the descriptors (centred); the weighted-Procrustes
  pose (R, t) maps the keypoints onto them, and ‖R μ + t − k̄‖² is the loss (weight 1).
That network (the official "aligner") gives the canonical frame: P_can = R P + t. A second ACNe encoder reads P_can
and pools its features with the same attention into descriptors, and K decoders (AtlasNet-style MLPs on a
learnable grid, each offset by its capsule's canonical keypoint) reconstruct P_can; the Chamfer distance between
them is the reconstruction loss (weight 1).

What differs from the official code, and why:
- ACN is computed with four batched products instead of a [B, C, K, N] tensor (memory K times smaller); the
  weighted variance uses Σ Ā x² − 2μ Σ Ā x + μ² Σ Ā, equal to the official Σ Ā (x − μ)² in exact arithmetic.
- The K decoders are one grouped 1x1 convolution per layer, the Procrustes SVD one batched call: no loop over
  capsules or examples.
- 3-D rotations are uniform on SO(3). The official sampler (`random_rot`, limit 180°) draws the quaternion's real
  part with a larger scale than the others, so its rotations are biased small: mean angle 95° against 126° for
  uniform rotations (measured on 200,000 draws); 2-D rotations are uniform in both.
- The official aligner also builds a decoder it never uses, and the main encoder an attention head it never uses;
  neither is built here (`zoo convert` skips them by name).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.rotations import random_rotations

EPS_MASS = 1e-3  # the attention mass Σ_n A_kn is clamped at this before normalising (official `a_norm_eps: clamp`)


def normalised_attention(A: torch.Tensor) -> torch.Tensor:
    """Ā [B, K, N]: the attention divided by each capsule's mass over the points (clamped at 1e-3)."""
    return A / A.sum(-1, keepdim=True).clamp_min(EPS_MASS)


def pool(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_n Ā_kn x_n: [B, C, K] from attention [B, K, N] and per-point values [B, C, N] (keypoints when x holds the
    coordinates, descriptors when it holds features)."""
    return torch.bmm(x, normalised_attention(A).transpose(1, 2))


class ACN(nn.Module):
    """Attentive context normalisation with K branches (ACNe's `acn_b`): a 1x1 layer gives attention logits, a
    softmax over the K branches at every point weighs K normalisations, x ↦ Σ_k a_kn (x_n − μ_k) / σ_k, where
    μ_k and σ_k² are the a_k-weighted mean and variance over points (σ_k² + ε, ε = 1e-3)."""

    def __init__(self, channels: int, K: int, eps: float = 1e-3):
        super().__init__()
        self.attention = nn.Conv1d(channels, K, 1)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(self.attention(x), dim=1)  # [B, K, N]
        w = normalised_attention(a).transpose(1, 2)  # [B, N, K]
        mu = torch.bmm(x, w)  # [B, C, K]
        second = torch.bmm(x * x, w)
        mass = w.sum(1, keepdim=True)  # [B, 1, K]: 1 unless the clamp acted
        inv_sigma = torch.rsqrt((second - 2 * mu * mu + mu * mu * mass).clamp_min(0) + self.eps)
        # Σ_k a_k (x − μ_k)/σ_k = x · Σ_k a_k/σ_k − Σ_k a_k μ_k/σ_k, two [C, K] x [K, N] products
        return x * torch.bmm(inv_sigma, a) - torch.bmm(mu * inv_sigma, a)


class ACNLayer(nn.Sequential):
    """1x1 convolution -> ACN -> batch norm -> ReLU (the official `ConvLayer` with cn_pos post, bn)."""

    def __init__(self, c_in: int, c_out: int, K: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, 1)
        self.cn = ACN(c_out, K)
        self.bn = nn.BatchNorm1d(c_out)
        self.relu = nn.ReLU()


class ResBlock(nn.Module):
    """x + two ACN layers of x, with an ACN layer first when the width changes."""

    def __init__(self, c_in: int, c_out: int, K: int, inner: int = 2):
        super().__init__()
        self.pass_through = ACNLayer(c_in, c_out, K) if c_in != c_out else None
        self.layers = nn.Sequential(*[ACNLayer(c_out, c_out, K) for _ in range(inner)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pass_through is not None:
            x = self.pass_through(x)
        return x + self.layers(x)


class Capsules(NamedTuple):
    """A decomposition: attention A [B, K, N] (softmax over k), keypoints μ [B, d, K], descriptors β [B, C, K]."""
    A: torch.Tensor
    mu: torch.Tensor
    beta: torch.Tensor


class ACNeEncoder(nn.Module):
    """`depth` residual ACN blocks of width C on [B, d, N] points, and (with `attention_head`) the capsule
    attention: a 1x1 layer to K logits, softmax over capsules (the official `KoutLayer`)."""

    def __init__(self, d: int, C: int = 128, K: int = 10, depth: int = 3, attention_head: bool = True):
        super().__init__()
        self.blocks = nn.Sequential(*[ResBlock(d if i == 0 else C, C, K) for i in range(depth)])
        self.head = nn.Conv1d(C, K, 1) if attention_head else None

    def forward(self, p: torch.Tensor, A: torch.Tensor | None = None) -> Capsules:
        """Capsules of points p [B, d, N]; with A given, its features are pooled by that attention instead."""
        f = self.blocks(p)
        if A is None:
            A = torch.softmax(self.head(f), dim=1)
        return Capsules(A, pool(A, p), pool(A, f))


class CanonicalKeypoints(nn.Module):
    """𝒦: the canonical keypoints k̄ [B, d, K] regressed from all descriptors (flattened C-major, as the official
    `MlpPointsFC`: dense C·K -> C·K, ReLU, dense -> d·K), centred on their mean."""

    def __init__(self, d: int, C: int, K: int):
        super().__init__()
        self.fc1 = nn.Linear(C * K, C * K)
        self.fc2 = nn.Linear(C * K, d * K)
        self.d, self.K = d, K

    def forward(self, beta: torch.Tensor) -> torch.Tensor:
        k = self.fc2(F.relu(self.fc1(beta.flatten(1)))).view(-1, self.d, self.K)
        return k - k.mean(-1, keepdim=True)


def procrustes(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rigid (R, t) [B, d, d], [B, d, 1] minimising Σ_k ‖R s_k + t − t_k‖² for point sets [B, d, K] (Kabsch:
    SVD of the cross-covariance, the last singular direction flipped when needed so that det R = +1), one batched
    SVD."""
    cs, ct = source.mean(-1, keepdim=True), target.mean(-1, keepdim=True)
    cov = torch.bmm(source - cs, (target - ct).transpose(1, 2)) / source.shape[-1]
    U, _, Vh = torch.linalg.svd(cov)
    V = Vh.transpose(1, 2)
    sign = torch.linalg.det(torch.bmm(V, U.transpose(1, 2)))
    V = torch.cat([V[..., :-1], V[..., -1:] * sign[:, None, None]], -1)
    R = torch.bmm(V, U.transpose(1, 2))
    return R, ct - torch.bmm(R, cs)


class CapsuleDecoders(nn.Module):
    """K AtlasNet-style decoders (the official `KpDecoder` of `PointGenCon`s), capsule k mapping each of its
    M = n_points / K learnable grid samples g (uniform in [0, 1]^grid_dim at initialisation), concatenated with β_k,
    through 1x1 layers of width b, b/2, b/4 (batch norm, ReLU) and a tanh to d numbers, then adding μ_k. The K
    decoders are grouped convolutions, so all capsules run in one product per layer."""

    def __init__(self, d: int, C: int, K: int, n_points: int, bottleneck: int = 1280, grid_dim: int = 10):
        super().__init__()
        self.K, self.d = K, d
        self.grid = nn.Parameter(torch.rand(K, grid_dim, n_points // K))
        widths = [grid_dim + C, bottleneck, bottleneck // 2, bottleneck // 4]
        self.layers = nn.ModuleList(nn.Conv1d(K * a, K * b, 1, groups=K) for a, b in zip(widths[:-1], widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(K * b) for b in widths[1:])
        self.out = nn.Conv1d(K * widths[-1], K * d, 1, groups=K)

    def forward(self, mu: torch.Tensor, beta: torch.Tensor, split: bool = False) -> torch.Tensor:
        """Points [B, K·M, d] (capsule k's M points at rows k·M ... k·M + M − 1), or [B, K, M, d] with `split`."""
        B, M = beta.shape[0], self.grid.shape[-1]
        h = torch.cat([self.grid.expand(B, -1, -1, -1),
                       beta.transpose(1, 2)[..., None].expand(-1, -1, -1, M)], 2)  # [B, K, grid + C, M]
        h = h.reshape(B, -1, M)
        for layer, norm in zip(self.layers, self.norms):
            h = F.relu(norm(layer(h)))
        y = torch.tanh(self.out(h)).view(B, self.K, self.d, M) + mu.transpose(1, 2)[..., None]
        y = y.transpose(2, 3)
        return y if split else y.reshape(B, -1, self.d)


def chamfer_loss(x: torch.Tensor, y: torch.Tensor, per_cloud: bool = False) -> torch.Tensor:
    """The official reconstruction loss: mean over the batch of mean_i min_j ‖x_i − y_j‖² + mean_j min_i ‖x_i −
    y_j‖², for point sets [B, N, d] and [B, M, d], squared distances by the product expansion (as the official
    `ChamferLoss`; clamped at 0). `per_cloud`: the [B] values before the batch mean."""
    sq = (x.square().sum(-1, keepdim=True) + y.square().sum(-1)[:, None] - 2 * torch.bmm(x, y.transpose(1, 2)))
    sq = sq.clamp_min(0)
    if per_cloud:
        return sq.amin(2).mean(1) + sq.amin(1).mean(1)
    return sq.amin(2).mean() + sq.amin(1).mean()


def random_poses(B: int, d: int, translation: float = 0.2, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random rigid poses: R [B, d, d] uniform on SO(d) (2-D: an angle uniform in [0, 2π); 3-D: a normalised
    Gaussian quaternion) and t [B, d, 1] uniform in [−translation, translation]^d."""
    if d not in (2, 3):
        raise ValueError(f"poses in {d} dimensions: Canonical Capsules works on 2-D or 3-D point clouds")
    R = random_rotations(B, d, generator)
    t = (torch.rand(B, d, 1, generator=generator) * 2 - 1) * translation
    return R.to(device), t.to(device)


class CanonicalLosses(NamedTuple):
    total: torch.Tensor
    reconstruction: torch.Tensor
    equivariance: torch.Tensor
    localisation: torch.Tensor
    equilibrium: torch.Tensor
    invariance: torch.Tensor
    canonical: torch.Tensor


def localisation(caps: Capsules, p: torch.Tensor) -> torch.Tensor:
    """Σ_k Σ_n Ā_kn ‖p_n − μ_k‖² (the trace of each capsule's weighted covariance, summed over capsules), mean over
    the batch (the official `spatial_variance`, l1)."""
    w = normalised_attention(caps.A)  # [B, K, N]
    sq = torch.bmm(w, p.square().sum(1)[..., None])[..., 0]  # Σ_n Ā ‖p‖²  [B, K]
    mass = w.sum(-1)
    mu = caps.mu
    return (sq - 2 * (mu * mu).sum(1) + (mu * mu).sum(1) * mass).sum(-1).mean()


def equilibrium(caps: Capsules) -> torch.Tensor:
    """The variance over capsules of each capsule's attention mass Σ_n A_kn (unbiased), mean over the batch."""
    return caps.A.sum(-1).var(dim=1).mean()


class Canonicaliser(nn.Module):
    """The capsule network that learns the canonical frame (the official aligner): an ACNe encoder with the
    attention head, and 𝒦."""

    def __init__(self, d: int, C: int, K: int, depth: int):
        super().__init__()
        self.encoder = ACNeEncoder(d, C, K, depth, attention_head=True)
        self.keypoints = CanonicalKeypoints(d, C, K)

    def forward(self, p: torch.Tensor) -> tuple[Capsules, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Capsules of p [B, d, N], the canonical keypoints k̄ [B, d, K] and the pose (R, t) taking μ onto k̄."""
        caps = self.encoder(p)
        k_bar = self.keypoints(caps.beta)
        R, t = procrustes(caps.mu, k_bar)
        return caps, k_bar, R, t


class CanonicalCapsules(nn.Module):
    """The whole network: canonicaliser, the second encoder (no attention head) and the capsule decoders.

    Shapes: clouds [B, N, d] in and out, as the official data loader gives them."""

    def __init__(self, d: int = 3, K: int = 10, C: int = 128, depth: int = 3, n_points: int = 1024,
                 bottleneck: int = 1280, grid_dim: int = 10):
        super().__init__()
        self.canonicaliser = Canonicaliser(d, C, K, depth)
        self.encoder = ACNeEncoder(d, C, K, depth, attention_head=False)
        self.decoder = CapsuleDecoders(d, C, K, n_points, bottleneck, grid_dim)
        self.d = d

    def check(self, x: torch.Tensor) -> None:
        """Clouds must be [B, N, d] with N > 0 points in this model's d dimensions: anything else is a ValueError
        that says what was given."""
        if x.ndim != 3 or x.shape[-1] != self.d:
            raise ValueError(f"expected point clouds [batch, points, {self.d}], got shape {tuple(x.shape)}"
                             + (" (a 2-D cloud for a 3-D model, or the reverse?)" if x.ndim == 3 else ""))
        if x.shape[1] == 0:
            raise ValueError("an empty point cloud (0 points): capsules need points to attend to")

    def canonicalise(self, x: torch.Tensor) -> tuple[torch.Tensor, Capsules, torch.Tensor, torch.Tensor]:
        """x [B, N, d] in its canonical frame, with the canonicaliser's capsules and the pose (R, t) used."""
        self.check(x)
        p = x.transpose(1, 2)
        caps, _, R, t = self.canonicaliser(p)
        return (torch.bmm(R, p) + t).transpose(1, 2), caps, R, t

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, Capsules]:
        """The canonical cloud and its capsules: keypoints in the canonical frame, the second encoder's descriptors
        pooled by the canonicaliser's attention (what the decoders and the classifier read)."""
        x_can, caps, _, _ = self.canonicalise(x)
        return x_can, self.encoder(x_can.transpose(1, 2), caps.A)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction [B, K·M, d], the canonical cloud [B, N, d]) of clouds x [B, N, d] in any pose."""
        x_can, caps = self.encode(x)
        return self.decoder(caps.mu, caps.beta), x_can

    def losses(self, x: torch.Tensor, w_equivariance: float = 5.0, w_localisation: float = 1.0,
               w_equilibrium: float = 1e-3, w_invariance: float = 1.0, w_canonical: float = 1.0,
               w_reconstruction: float = 1.0, translation: float = 0.2,
               generator: torch.Generator | None = None) -> CanonicalLosses:
        """The six losses on two random poses of each cloud x [B, N, d] (the official training step)."""
        self.check(x)
        B = x.shape[0]
        p = x.transpose(1, 2)
        Ra, ta = random_poses(B, self.d, translation, generator, x.device)
        Rb, tb = random_poses(B, self.d, translation, generator, x.device)
        pa, pb = torch.bmm(Ra, p) + ta, torch.bmm(Rb, p) + tb
        both = torch.cat([pa, pb])
        caps, k_bar, R, t = self.canonicaliser(both)
        mu_a, mu_b = caps.mu[:B], caps.mu[B:]
        R_ab = torch.bmm(Rb, Ra.transpose(1, 2))  # view a -> view b: p_b = R_ab (p_a − t_a) + t_b
        equivariance = (torch.bmm(R_ab, mu_a - ta) + tb - mu_b).square().sum(1).mean()
        loc = localisation(caps, both)
        eq = equilibrium(caps)
        invariance = F.mse_loss(caps.beta[:B], caps.beta[B:])
        canonical = (torch.bmm(R, caps.mu) + t - k_bar).square().sum(1).mean()
        # reconstruction: view a in the canonical frame, encoded with its canonicaliser attention
        p_can = torch.bmm(R[:B], pa) + t[:B]
        A = caps.A[:B]
        main = self.encoder(p_can, A)
        y = self.decoder(main.mu, main.beta)
        reconstruction = chamfer_loss(p_can.transpose(1, 2), y)
        total = (w_reconstruction * reconstruction + w_equivariance * equivariance + w_localisation * loc
                 + w_equilibrium * eq + w_invariance * invariance + w_canonical * canonical)
        return CanonicalLosses(total, reconstruction, equivariance, loc, eq, invariance, canonical)
