"""Imputer: Sequence Modelling via Imputation and Dynamic Programming (Chan, Saharia, Hinton, Norouzi & Jaitly,
ICML 2020, arXiv 2002.08926).

The Imputer generates a CTC-style alignment ã (one output per encoder frame: the blank or a phone) by iterative
imputation: it reads the audio x and the partially imputed alignment (masked positions hold the mask token) and gives
every position a distribution over the K phones and the blank, independently given (ã, x). Audio and alignment are
superimposed, not attended across: a convolutional network subsamples the filterbank frames, the embedding of the
alignment token at each frame is added, and a self-attention stack reads the sum (the paper's Figure 3).

* Training (§3, the dynamic programme): a mask is drawn over an expert's alignment (the Viterbi alignment of a trained
  CTC model) and the loss is -log Σ p(a | ã, x) over every alignment a that collapses to the target y and agrees with
  the unmasked positions of ã, a lower bound on log p(y | x). That sum is CTC's forward recursion with the unmasked
  frames held to their observed outputs (`imputation_loss`). The simpler imitation loss, cross-entropy on the
  expert's outputs at the masked positions, is `imitation_loss`.
* Masking (`block_mask`): the alignment in blocks of B frames; per utterance a count c uniform in 1..B and, within
  each block, c random positions masked (as the PyTorch port rosinality/imputer-pytorch; the paper's exact
  distribution is not checked here).
* Decoding (`block_decode`): start fully masked; each of B steps fills, in every block, the masked position the
  model is most confident about with its arg-max output; B steps whatever the length. The output is the collapse.
  B = 1 (one step filling everything) is CTC's best path.

Blank = 0, phones 1..K, mask = K+1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvSubsampler(nn.Module):
    """Two 3x3 convolutions, each with stride 2 in time, over the filterbank frames seen as `planes` channels (the
    static features and their deltas), then a linear map to d: [B, T, planes·F] -> [B, ceil(T/4), d]."""

    def __init__(self, in_features: int, d: int, channels: int = 32, planes: int = 3):
        super().__init__()
        if in_features % planes:
            raise ValueError(f"in_features={in_features} is not {planes} planes of equal size")
        self.planes, self.width = planes, in_features // planes
        self.conv = nn.Sequential(nn.Conv2d(planes, channels, 3, stride=(2, 1), padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1), nn.ReLU())
        self.proj = nn.Linear(channels * self.width, d)

    @staticmethod
    def out_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths + 3, 4, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        valid = torch.arange(t, device=x.device)[None] < lengths.to(x.device)[:, None]
        x = x.masked_fill(~valid[..., None], 0).view(b, t, self.planes, self.width).transpose(1, 2)
        h = self.conv(x)                                                  # [B, C, T', F]
        return self.proj(h.permute(0, 2, 1, 3).flatten(2)), self.out_lengths(lengths)


def sinusoidal_positions(length: int, d: int, device=None) -> torch.Tensor:
    """The Transformer's fixed position signal [length, d]."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    out = torch.zeros(length, d, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return out


class Imputer(nn.Module):
    """p(a_t | ã, x) for every frame t of the subsampled audio: log-probabilities [B, T', K+1].

    `encode` runs the convolutional front end once; `impute` adds the alignment's embedding and runs the
    self-attention stack (pre-norm Transformer layers, padded frames masked out of attention)."""

    def __init__(self, in_features: int, num_phones: int, d: int = 144, layers: int = 4, heads: int = 4,
                 ff: int = 576, dropout: float = 0.1, channels: int = 32, planes: int = 3):
        super().__init__()
        self.num_phones, self.mask_id = num_phones, num_phones + 1
        self.subsample = ConvSubsampler(in_features, d, channels, planes)
        self.embed = nn.Embedding(num_phones + 2, d)                      # blank, phones, mask
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.output = nn.Linear(d, num_phones + 1)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.subsample(x, lengths)

    def impute(self, h: torch.Tensor, lengths: torch.Tensor, alignment: torch.Tensor) -> torch.Tensor:
        t = h.shape[1]
        z = (h + self.embed(alignment)) * math.sqrt(h.shape[-1]) + sinusoidal_positions(t, h.shape[-1], h.device)
        pad = torch.arange(t, device=h.device)[None] >= lengths.to(h.device)[:, None]
        return self.output(self.norm(self.encoder(z, src_key_padding_mask=pad))).log_softmax(-1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, alignment: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities [B, T', K+1] and T' lengths; `alignment` [B, T'] defaults to fully masked (CTC)."""
        h, lengths = self.encode(x, lengths)
        if alignment is None:
            alignment = torch.full(h.shape[:2], self.mask_id, dtype=torch.long, device=h.device)
        return self.impute(h, lengths, alignment), lengths


def block_mask(lengths: torch.Tensor, T: int, block: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Which positions [B, T] are masked: per utterance a count c uniform in 1..block, and in every block of
    `block` consecutive frames the c positions of lowest random rank (so no alignment is ever fully observed, and a
    fully masked one, CTC, comes with probability 1/block). Frames past the length are masked."""
    B = lengths.shape[0]
    nb = -(-T // block)
    ranks = torch.rand(B, nb, block, generator=generator).argsort(-1).argsort(-1)     # a random order per block
    count = torch.randint(1, block + 1, (B, 1, 1), generator=generator)
    masked = (ranks < count).view(B, nb * block)[:, :T].to(lengths.device)
    return masked | (torch.arange(T, device=lengths.device)[None] >= lengths[:, None])


def imputation_loss(log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                    target_lengths: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """-log Σ_a p(a | ã, x) over the alignments a that collapse to the target and agree with `observed` [B, T']
    (an output per frame, or -1 where masked), per utterance [B]; `log_probs` [B, T', K+1] are log-softmax outputs.

    Every such alignment takes the observed output at an observed frame, so those frames contribute the same factor
    p(ã_t) to every term and the sum is Π_observed p(ã_t) · Σ_a Π_masked p(a_t): the first factor by a gather, the
    second by CTC's forward recursion (F.ctc_loss) with each observed frame's distribution replaced by a point mass
    on its output. (A point mass, rather than the other outputs set to -inf, keeps every frame a distribution, which
    PyTorch's CTC gradient assumes.)"""
    obs = observed >= 0
    tok = observed.clamp_min(0)
    valid = torch.arange(observed.shape[1], device=observed.device)[None] < lengths.to(observed.device)[:, None]
    fixed = (log_probs.gather(2, tok[..., None])[..., 0] * (obs & valid)).sum(1)
    point = torch.full_like(log_probs, -1e30).scatter_(2, tok[..., None], 0.0)
    held = torch.where(obs[..., None], point, log_probs)
    free = F.ctc_loss(held.transpose(0, 1), targets, lengths, target_lengths, blank=0, reduction="none",
                      zero_infinity=True)
    return free - fixed


def imitation_loss(log_probs: torch.Tensor, expert: torch.Tensor, masked: torch.Tensor,
                   lengths: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the expert's outputs [B, T'] at the masked positions within each length, summed per
    utterance [B]."""
    valid = masked & (torch.arange(expert.shape[1], device=expert.device)[None] < lengths.to(expert.device)[:, None])
    nll = -log_probs.gather(2, expert[..., None])[..., 0]
    return (nll * valid).sum(1)


@torch.no_grad()
def block_decode(net: Imputer, x: torch.Tensor, lengths: torch.Tensor, block: int, steps: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Block decoding: the alignment [B, T'] after `steps` (default `block`) imputation passes, each filling in
    every block of `block` frames the masked positions the model is surest of (block/steps of them per pass, the
    arg-max output each), and its lengths. The number of passes does not depend on the length."""
    h, lengths = net.encode(x, lengths)
    B, T = h.shape[:2]
    steps = steps or block
    nb = -(-T // block)
    valid = torch.arange(nb * block, device=h.device)[None] < lengths[:, None]
    a = torch.full((B, nb * block), net.mask_id, dtype=torch.long, device=h.device)
    for i in range(steps):
        lp = net.impute(h, lengths, a[:, :T])
        conf, out = F.pad(lp, (0, 0, 0, nb * block - T)).max(-1)             # [B, nb·block]
        open_ = (a == net.mask_id) & valid
        k = math.ceil(block * (i + 1) / steps) - math.ceil(block * i / steps)
        conf = conf.masked_fill(~open_, float("-inf")).view(B, nb, block)
        top = conf.topk(k, -1).indices                                    # [B, nb, k]
        chosen = torch.zeros(B, nb, block, dtype=torch.bool, device=h.device).scatter_(2, top, True).view(B, -1)
        fill = chosen & open_
        a = torch.where(fill, out, a)
    return a[:, :T].masked_fill(~valid[:, :T], 0), lengths
