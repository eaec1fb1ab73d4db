"""Diffusion parts shared by the analog-bit papers (Bit Diffusion, arXiv 2208.04202; Pix2Seq-D, ICCV 2023), with the
conventions of the official google-research/pix2seq code:

- analog bits: an integer v in [0, 2^n) as n bits, least significant first (the official int2bits), optionally after
  a fixed permutation of the values (Gray code, or "uint8_s": numpy's seed-42 shuffle), mapped to
  (2 b - 1) · scale; channel c · n + k holds bit k of channel c; decoding thresholds at 0;
- the cosine schedule γ(t) = cos²(((t + 2e-4) / (1 + 2.5e-4)) π/2), the DDIM and DDPM moves and the time grid with
  the asymmetric interval td;
- the official TransUNet's convolutional U-Net (GroupNorm with min(C/4, 32) groups, the γ embedding as a per-block
  scale and shift, residual sums scaled by 1/√2, self-attention at chosen resolutions, an optional space-to-depth
  input stride, an optional middle block between the down and up paths, 3 x 3 or 1 x 1 input and output convs).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.init import keras_init_

CODES = ("uint8", "gray", "uint8_s")


# ---------------------------------------------------------------- analog bits
def int_to_bits(v: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Integers [...] -> bits [..., n_bits] in {0, 1} (float), least significant bit first."""
    shifts = torch.arange(n_bits, device=v.device)
    return ((v.long().unsqueeze(-1) >> shifts) & 1).float()


def bits_to_int(bits: torch.Tensor) -> torch.Tensor:
    """Bits [..., n] (bool or {0, 1}), least significant first -> integers [...]."""
    weights = 2 ** torch.arange(bits.shape[-1], device=bits.device)
    return (bits.long() * weights).sum(-1)


def gray_code(n_bits: int) -> torch.Tensor:
    """The reflected binary Gray code: entry v is the code word of v (v XOR v >> 1); neighbours differ in one bit."""
    v = torch.arange(2**n_bits)
    return v ^ (v >> 1)


def code_table(code: str, n_bits: int) -> torch.Tensor:
    """The value -> code-word permutation of `code`."""
    if code == "uint8":
        return torch.arange(2**n_bits)
    if code == "gray":
        return gray_code(n_bits)
    if code == "uint8_s":  # the paper's random code words (App. C): numpy's seed-42 shuffle of the values
        import numpy as np

        table = np.arange(2**n_bits)
        np.random.RandomState(42).shuffle(table)
        return torch.from_numpy(table).long()
    raise ValueError(f"code must be one of {CODES}, got {code!r}")


class AnalogBits(nn.Module):
    """Integer images [B, C, H, W] <-> analog bits [B, C·n, H, W] in {-scale, +scale}."""

    def __init__(self, code: Literal["uint8", "gray", "uint8_s"] = "uint8", n_bits: int = 8, scale: float = 1.0):
        super().__init__()
        self.code, self.n_bits, self.scale = code, n_bits, scale
        table = code_table(code, n_bits)
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("inverse", torch.argsort(table), persistent=False)

    def encode(self, v: torch.Tensor) -> torch.Tensor:
        b, c, h, w = v.shape
        bits = int_to_bits(self.table[v.long()], self.n_bits)  # [B, C, H, W, n]
        return (bits * 2 - 1).mul_(self.scale).permute(0, 1, 4, 2, 3).reshape(b, c * self.n_bits, h, w)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        b, cn, h, w = x.shape
        bits = x.view(b, cn // self.n_bits, self.n_bits, h, w).permute(0, 1, 3, 4, 2) > 0
        return self.inverse[bits_to_int(bits)]


# ---------------------------------------------------------------- the noise schedule and the two samplers
def cosine_gamma(t: torch.Tensor, ns: float = 2e-4, ds: float = 2.5e-4) -> torch.Tensor:
    """γ(t) = cos²(((t + ns)/(1 + ds)) π/2): the signal fraction at time t (the official cosine schedule)."""
    return torch.cos((t + ns) / (1 + ds) * math.pi / 2) ** 2


def x0_to_eps(x_t: torch.Tensor, gamma: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    return (x_t - gamma.sqrt() * x0) / (1 - gamma).sqrt()


def eps_to_x0(x_t: torch.Tensor, gamma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return (x_t - (1 - gamma).sqrt() * eps) / gamma.sqrt()


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, gamma_next: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM move to the next (smaller) time: √γ' x̂0 + √(1 - γ') ε̂."""
    return gamma_next.sqrt() * x0 + (1 - gamma_next).sqrt() * eps


def ddpm_step(x_t: torch.Tensor, eps: torch.Tensor, gamma: torch.Tensor, gamma_next: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
    """The ancestral DDPM move with the "large" variance β = 1 - α, α = γ/γ' (the official default)."""
    alpha = (gamma / gamma_next).clamp(0, 1)
    mean = (x_t - (1 - alpha) / (1 - gamma).sqrt() * eps) / alpha.sqrt()
    return mean + (1 - alpha).sqrt() * noise


def time_grid(steps: int, td: float = 0.0) -> list[tuple[float, float]]:
    """Algorithm 2's (t, t') pairs: the denoiser is queried at t = 1 - i/steps and the sample moves to
    t' = max(1 - (i + 1 + td)/steps, 0); td > 0 is the asymmetric time interval (in units of one step, as the
    official code)."""
    if steps < 1 or td < 0:
        raise ValueError(f"need steps >= 1 and td >= 0, got steps={steps}, td={td}")
    return [(1 - i / steps, max(1 - (i + 1 + td) / steps, 0.0)) for i in range(steps)]


# ---------------------------------------------------------------- the denoiser: the official TransUNet's U-Net
def group_count(channels: int) -> int:
    return min(channels // 4, 32)


def scaled_sum(*xs: torch.Tensor) -> torch.Tensor:
    return sum(xs) / math.sqrt(len(xs))


class ScalarEmbedding(nn.Module):
    """γ -> sinusoidal code of γ · scaling (sines of the even frequencies, then cosines of the odd ones, as the
    official positional_encoding) -> two SiLU dense layers of width 4 · dim."""

    def __init__(self, dim: int, scaling: float):
        super().__init__()
        self.dim, self.scaling = dim, scaling
        i = torch.arange(dim)
        self.register_buffer("rates", 1.0 / 10000 ** ((2 * (i // 2)).float() / dim), persistent=False)
        self.dense0 = nn.Linear(dim, 4 * dim)
        self.dense1 = nn.Linear(4 * dim, 4 * dim)

    def forward(self, gamma: torch.Tensor) -> torch.Tensor:
        angles = gamma[:, None] * self.scaling * self.rates
        code = torch.cat([angles[:, 0::2].sin(), angles[:, 1::2].cos()], -1)
        return F.silu(self.dense1(F.silu(self.dense0(code))))


class ResBlock(nn.Module):
    """GN-SiLU-conv, then GN modulated by the time embedding (scale + 1, shift), SiLU, dropout, conv; summed with
    the (1 x 1-projected) input and scaled by 1/√2."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm0 = nn.GroupNorm(group_count(c_in), c_in, eps=1e-5)
        self.conv0 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * c_out)
        self.norm1 = nn.GroupNorm(group_count(c_out), c_out, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, 1)
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h) * (scale + 1) + shift)
        return scaled_sum(self.conv1(self.dropout(h)), self.skip(x))


class SelfAttention2d(nn.Module):
    """Pre-norm multi-head self-attention over the H·W positions, summed with its input and scaled by 1/√2."""

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        self.heads = max(channels // head_dim, 1)
        self.norm = nn.GroupNorm(group_count(channels), channels, eps=1e-5)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = self.qkv(y).view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return scaled_sum(x, self.out(y).transpose(1, 2).view(b, c, h, w))


class Level(nn.Module):
    """One resolution of the U-Net: residual blocks, each followed by self-attention when this resolution is in
    `attention_at`."""

    def __init__(self, c_ins: list[int], c_out: int, emb_dim: int, dropout: float, attention: bool, head_dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, c_out, emb_dim, dropout) for c in c_ins)
        self.attns = nn.ModuleList(SelfAttention2d(c_out, head_dim) for _ in c_ins) if attention else None


class UNet(nn.Module):
    """The official TransUNet's U-Net: conv_in (optionally strided: the network runs at 1/in_stride of the image
    and its output is rearranged back, depth to space), down levels storing every residual block's output as a
    lateral (before that block's self-attention, as the official code; `lateral_after_attention=True` stores it
    after, as this class did before 2026-12-05 and the Bit Diffusion entries measured then still do), an optional
    `middle` block (called as middle(h, emb, memory), returning `middle_channels` channels: Pix2Seq-D's
    transformer), up levels with one block more that each concatenate a lateral, GN-SiLU-conv_out. conv_in and
    conv_out are `io_kernel` square (3; Pix2Seq-D's TransUNet: 1)."""

    def __init__(self, in_channels: int, out_channels: int, dim: int = 64, channel_mult: list[int] = [1, 2],
                 num_res_blocks: list[int] = [2, 2], attention_at: list[int] = [7], image_size: int = 28,
                 in_stride: int = 1, dropout: float = 0.0, head_dim: int = 32, time_scaling: float = 1000.0,
                 io_kernel: int = 3, middle: nn.Module | None = None, middle_channels: int | None = None,
                 lateral_after_attention: bool = False):
        super().__init__()
        self.lateral_after_attention = lateral_after_attention
        if len(channel_mult) != len(num_res_blocks):
            raise ValueError(f"channel_mult {channel_mult} and num_res_blocks {num_res_blocks} need one entry "
                             "per resolution")
        self.in_stride = in_stride
        emb = 4 * dim
        self.time_emb = ScalarEmbedding(dim, time_scaling)
        widths = [dim * m for m in channel_mult]
        self.conv_in = nn.Conv2d(in_channels, widths[0], io_kernel, stride=in_stride, padding=io_kernel // 2)
        self.norm_in = nn.GroupNorm(group_count(widths[0]), widths[0], eps=1e-5)
        size = image_size // in_stride
        laterals, c = [widths[0]], widths[0]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        sizes = []
        for i, (w, n) in enumerate(zip(widths, num_res_blocks)):
            sizes.append(size)
            self.down.append(Level([c] + [w] * (n - 1), w, emb, dropout, size in attention_at, head_dim))
            c = w
            laterals += [w] * n
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
                laterals.append(w)
                size = (size + 1) // 2
        self.middle = middle
        if middle is not None:
            c = middle_channels or c
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(widths))):
            w, ins = widths[i], []
            for _ in range(num_res_blocks[i] + 1):
                ins.append(c + laterals.pop())
                c = w
            self.up.append(Level(ins, w, emb, dropout, sizes[i] in attention_at, head_dim))
            if i > 0:
                self.upsample.append(nn.Conv2d(w, w, 3, padding=1))
        self.norm_out = nn.GroupNorm(group_count(c), c, eps=1e-5)
        self.conv_out = nn.Conv2d(c, out_channels * in_stride**2, io_kernel, padding=io_kernel // 2)
        # the official initialisers: Glorot-uniform kernels (Keras' fan_avg), zero biases, and zero (theirs: scale
        # 1e-10) for the last conv of each residual branch and for the output conv
        keras_init_(self)
        for m in self.modules():
            if isinstance(m, ResBlock):
                nn.init.zeros_(m.conv1.weight)
        nn.init.zeros_(self.conv_out.weight)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_emb(gamma)
        h = self.norm_in(self.conv_in(x))
        laterals = [h]
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.blocks):
                h = block(h, emb)
                if not self.lateral_after_attention:
                    laterals.append(h)
                if level.attns is not None:
                    h = level.attns[j](h)
                if self.lateral_after_attention:
                    laterals.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                laterals.append(h)
        if self.middle is not None:
            h = self.middle(h, emb, memory)
        for i, level in enumerate(self.up):
            for j, block in enumerate(level.blocks):
                h = block(torch.cat([h, laterals.pop()], 1), emb)
                if level.attns is not None:
                    h = level.attns[j](h)
            if i < len(self.upsample):
                target = laterals[-1].shape[-2:]
                h = self.upsample[i](F.interpolate(h, size=target, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, self.in_stride) if self.in_stride > 1 else out
