"""Bit Diffusion (Chen, Zhang & Hinton, "Analog Bits", arXiv 2208.04202): discrete data as analog bits under a
continuous Gaussian diffusion, with self-conditioning and asymmetric time intervals.

Notation (Sec. 2-3 of the paper; the conventions of the official google-research/pix2seq code where the paper is
silent):

- Analog bits: an integer v in [0, 2^n) is written as n bits, least significant first (the official int2bits),
  optionally after a fixed permutation of the values (Gray code: v ^ (v >> 1); "uint8_s": the paper's random
  permutation, numpy's shuffle under seed 42), and mapped to x0 = (2 b - 1) · scale ∈ {-scale, +scale}. An image
  with C channels has C · n bit channels, channel c · n + k holding bit k of channel c. Decoding thresholds at 0.
- Forward process (continuous time t ∈ [0, 1]): x_t = √γ(t) x0 + √(1 - γ(t)) ε, with the cosine schedule
  γ(t) = cos²(((t + 2e-4) / (1 + 2.5e-4)) π/2). The denoiser f(x_t, x̃0, γ) sees γ (not t), as the official code.
- Objective: x0 prediction with an L2 loss (the paper's main setting) or ε prediction.
- Self-conditioning (Algorithm 1): for the first `self_cond_rate` of each batch (a deterministic split, as the
  official code), a first pass f(x_t, 0, γ) gives x̃0, which is detached and fed as extra input channels to the
  pass the loss sees; the rest of the batch gets zeros there.
- Sampling (Algorithm 2): DDIM or DDPM from t = 1 over `steps` equal steps, the prediction at t feeding the
  self-conditioning input at the next step, and the asymmetric time interval: the step goes from t to
  t' = max(t - (1 + td)/steps, 0) (td = 0: the usual grid). The final x0 estimate is thresholded to bits.

The denoiser (zoo.nn.diffusion, shared with Pix2Seq-D) is the official TransUNet's convolutional U-Net (GroupNorm, the time embedding as a per-block scale
and shift, residual sums scaled by 1/√2, self-attention at chosen resolutions, an optional space-to-depth input
stride). Its optional middle transformer is not built (the paper's image models are U-Nets). Two departures, neither
matters when training from scratch: the attention's GroupNorm takes min(C/4, 32) groups like every other norm here
(the official one keeps Keras' default 32), and the strided variant's depth-to-space uses torch's channel order
(pixel_shuffle), a fixed permutation of the output convolution's channels.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from zoo.nn.diffusion import (CODES, AnalogBits, ResBlock, ScalarEmbedding, SelfAttention2d, UNet, bits_to_int,
                              code_table, cosine_gamma, ddim_step, ddpm_step, eps_to_x0, gray_code, int_to_bits,
                              scaled_sum, time_grid, x0_to_eps)

__all__ = ["CODES", "AnalogBits", "BitDiffusion", "ResBlock", "ScalarEmbedding", "SelfAttention2d", "UNet",
           "bits_to_int", "code_table", "cosine_gamma", "ddim_step", "ddpm_step", "eps_to_x0", "gray_code",
           "int_to_bits", "scaled_sum", "time_grid", "x0_to_eps"]


# ---------------------------------------------------------------- Bit Diffusion
class BitDiffusion(nn.Module):
    """Analog bits + the denoiser + the training loss and the samplers of the paper's Algorithms 1 and 2."""

    def __init__(self, image_channels: int = 1, image_size: int = 28, n_bits: int = 8,
                 code: Literal["uint8", "gray", "uint8_s"] = "uint8", scale: float = 1.0,
                 pred_type: Literal["x", "eps"] = "x", self_condition: bool = True, self_cond_rate: float = 0.5,
                 dim: int = 64, channel_mult: list[int] = [1, 2], num_res_blocks: list[int] = [2, 2],
                 attention_at: list[int] = [7], in_stride: int = 1, dropout: float = 0.0, head_dim: int = 32,
                 time_scaling: float = 1000.0, lateral_after_attention: bool = False):
        super().__init__()
        if pred_type not in ("x", "eps"):
            raise ValueError(f"pred_type must be 'x' or 'eps', got {pred_type!r}")
        self.bits = AnalogBits(code, n_bits, scale)
        self.image_shape = (image_channels, image_size, image_size)
        self.channels = image_channels * n_bits
        self.pred_type, self.self_condition, self.self_cond_rate = pred_type, self_condition, self_cond_rate
        in_channels = self.channels * (2 if self_condition else 1)
        self.f = UNet(in_channels, self.channels, dim, channel_mult, num_res_blocks, attention_at, image_size,
                      in_stride, dropout, head_dim, time_scaling,
                      lateral_after_attention=lateral_after_attention)

    def predict(self, x_t: torch.Tensor, x0_sc: torch.Tensor | None, gamma: torch.Tensor,
                net: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂0, ε̂) from one denoiser pass; x̂0 is clipped to [-scale, scale] and ε̂ recomputed from it (the
        official x0_clip 'auto' with truncate_noise)."""
        net = self.f if net is None else net
        inp = x_t if not self.self_condition else torch.cat([x_t, torch.zeros_like(x_t) if x0_sc is None else x0_sc], 1)
        out = net(inp, gamma)
        g = gamma.view(-1, 1, 1, 1)
        x0 = out if self.pred_type == "x" else eps_to_x0(x_t, g, out)
        s = self.bits.scale
        x0 = x0.clamp(-s, s)
        return x0, x0_to_eps(x_t, g, x0)

    def loss(self, v: torch.Tensor, generator: torch.Generator | None = None, net: nn.Module | None = None
             ) -> torch.Tensor:
        """Algorithm 1 on integer images v [B, C, H, W]: the mean squared error of the x0 (or ε) prediction of the
        denoiser `net` (default: `f`)."""
        net = self.f if net is None else net
        x0 = self.bits.encode(v)
        b = x0.shape[0]
        t = torch.rand(b, generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        gamma = cosine_gamma(t)
        g = gamma.view(-1, 1, 1, 1)
        x_t = g.sqrt() * x0 + (1 - g).sqrt() * eps
        inp = x_t
        if self.self_condition:
            sc = torch.zeros_like(x_t)
            n = int(b * self.self_cond_rate)
            if n > 0:
                with torch.no_grad():
                    sc[:n] = self.predict(x_t[:n], None, gamma[:n], net)[0]
            inp = torch.cat([x_t, sc], 1)
        out = net(inp, gamma)
        target = x0 if self.pred_type == "x" else eps
        return (out - target).pow(2).mean()

    @torch.no_grad()
    def sample(self, n: int, steps: int = 100, td: float = 0.0, sampler: Literal["ddim", "ddpm"] = "ddim",
               generator: torch.Generator | None = None, net: nn.Module | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """Algorithm 2: n integer images [n, C, H, W] from noise in `steps` steps, with time difference td."""
        c, h, w = self.image_shape
        x_t = torch.randn(n, self.channels, h, w, generator=generator, device=device)
        x0 = None
        ones = torch.ones(n, device=device)
        for t_now, t_next in time_grid(steps, td):
            gamma, gamma_next = cosine_gamma(ones * t_now), cosine_gamma(ones * t_next)
            x0, eps = self.predict(x_t, x0, gamma, net)
            gn = gamma_next.view(-1, 1, 1, 1)
            if sampler == "ddim":
                x_t = ddim_step(x0, eps, gn)
            elif sampler == "ddpm":
                noise = torch.randn(x_t.shape, generator=generator, device=device)
                x_t = ddpm_step(x_t, eps, gamma.view(-1, 1, 1, 1), gn, noise)
            else:
                raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        return self.bits.decode(x0)
