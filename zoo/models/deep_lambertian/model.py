"""Deep Lambertian Networks (Tang, Salakhutdinov & Hinton, ICML 2012): a generative model of an image v [P pixels]
whose latents are the albedo a [P], the surface normals N [P, 3] and one light ℓ [3] (direction times intensity),
joined by the Lambertian reflectance model, with learned priors over albedo and normals:

    p(v | a, N, ℓ) = Π_{i observed} N(v_i; a_i s_i, σ_v²),   s_i = max(0, n_iᵀ ℓ)   (Lambertian image, Gaussian noise)
    p(a) ∝ Σ_h exp(−E_a(a, h)),   p(N) ∝ Σ_g exp(−E_N(vec N, g))               (GRBM priors, zoo.nn.grbm)
    p(ℓ) = N(0, σ_ℓ² I)

Every pixel is observed by default. The normal and light conditionals use the linear model a_i n_iᵀℓ, exact where
the pixel is lit; a pixel in attached shadow then asks for n_iᵀℓ ≈ 0 (the terminator) rather than n_iᵀℓ ≤ 0, an
approximation. With `shadow` set, pixels no brighter than it are unobserved instead (as photometric stereo leaves
shadows out); on our renders that made the normals worse (it also hides the dark background, which otherwise pins
the albedo there to 0), so it is off by default.

Inference is block Gibbs sampling, every block's conditional in closed form and batched over pixels and images:
- h | a and g | N: the GRBMs' Bernoulli conditionals.
- a | v, N, ℓ, h: per pixel Gaussian, precision 1/σ_a,i² + s_i²/σ_v², mean (m_a,i/σ_a,i² + v_i s_i/σ_v²) / precision,
  m_a = μ_a + W_a h (the GRBM's p(a | h) is N(m_a, diag σ_a²)); at an unobserved pixel the prior alone.
- n_i | v, a, ℓ, g: per pixel a 3-D Gaussian whose precision D_i⁻¹ + u uᵀ, u = a_i ℓ / σ_v, is the prior's diagonal
  plus rank one; its covariance follows by Sherman-Morrison, D − D u uᵀ D / (1 + uᵀ D u), and a draw by the
  matching rank-one square root, so nothing 3 x 3 is inverted per pixel; at an unobserved pixel the prior alone.
- ℓ | v, a, N: a 3-D Gaussian over the observed pixels, precision I/σ_ℓ² + Σ_i a_i² n_i n_iᵀ / σ_v² (one batched
  Cholesky per image).

Normals are latent 3-vectors under their GRBM prior, which keeps them near unit length; they are normalised only
when reported. The chain starts from the training set's mean albedo and normals and from ℓ predicted by a linear
light estimator trained on images with known lights (`light_net`), and the posterior means are estimated by
averaging the states after burn-in.

Sources: the paper's abstract fixes the latents (albedo, normals, light), the Lambertian assumption and the learned
(DBN / GRBM) priors; the per-pixel Gaussian conditionals above follow from those choices. The full paper text was not
available to us: the noise model's exact form, the normals' prior structure and the sampler's schedule are ours and
say so in the model card.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from zoo.nn.grbm import GRBM, sample_bernoulli


class Latents(NamedTuple):
    """albedo [B, P], normal [B, P, 3] (unnormalised), light [B, 3]."""
    albedo: torch.Tensor
    normal: torch.Tensor
    light: torch.Tensor


def render(albedo: torch.Tensor, normal: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """The Lambertian mean image a ⊙ max(0, N ℓ) for albedo [..., P], normals [..., P, 3] and lights [..., 3]."""
    return albedo * torch.einsum("...pc,...c->...p", normal, light).clamp_min(0)


class DeepLambertianNetwork(nn.Module):
    """The two GRBM priors (albedo: P visible units, normals: 3P, pixel-major (x, y, z) per pixel), the noise
    σ_v, the light prior σ_ℓ and the linear light estimator used to start inference."""

    def __init__(self, pixels: int, hidden_albedo: int = 256, hidden_normal: int = 256, noise_std: float = 0.05,
                 light_std: float = 2.0, init_var: float = 1.0, shadow: float | None = None):
        super().__init__()
        self.pixels = pixels
        self.albedo_prior = GRBM(pixels, hidden_albedo, init_var)
        self.normal_prior = GRBM(3 * pixels, hidden_normal, init_var)
        self.light_net = nn.Linear(pixels, 3)
        self.noise_std, self.light_std, self.shadow = noise_std, light_std, shadow
        # the GRBMs see albedo and normals standardised per unit (x − mean) / std with the training set's statistics
        # (`set_standardisation`), as GRBMs are usually trained; conditionals are taken back to image units
        for name, size in (("albedo", pixels), ("normal", 3 * pixels)):
            self.register_buffer(f"{name}_mean", torch.zeros(size))
            self.register_buffer(f"{name}_std", torch.ones(size))
        self.register_buffer("standardised", torch.tensor(False))

    @torch.no_grad()
    def set_standardisation(self, albedo: torch.Tensor, normal: torch.Tensor, floor: float = 0.01) -> None:
        """Per-unit mean and std (at least `floor`) of training albedo [N, P] and normals [N, 3P]."""
        for name, x in (("albedo", albedo), ("normal", normal)):
            getattr(self, f"{name}_mean").copy_(x.mean(0))
            getattr(self, f"{name}_std").copy_(x.std(0).clamp_min(floor))
        self.standardised.fill_(True)

    def prior_hidden(self, which: str, x: torch.Tensor) -> torch.Tensor:
        """p(h = 1 | x) of the albedo ("albedo", x [B, P]) or normal ("normal", x [B, 3P]) GRBM."""
        prior = self.albedo_prior if which == "albedo" else self.normal_prior
        return prior.p_h_given_v((x - getattr(self, f"{which}_mean")) / getattr(self, f"{which}_std"))

    def prior_given_hidden(self, which: str, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The GRBM's p(x | h) = N(mean, diag var) in image units: mean [B, units], var [units]."""
        prior = self.albedo_prior if which == "albedo" else self.normal_prior
        std, mean = getattr(self, f"{which}_std"), getattr(self, f"{which}_mean")
        return mean + std * prior.mean_v_given_h(h).detach(), std.pow(2) * prior.var.detach()

    # ---------------------------------------------------------------- likelihood
    def observed(self, v: torch.Tensor) -> torch.Tensor:
        """1 where a pixel is observed (brighter than `shadow`; every pixel when it is None), else 0."""
        return torch.ones_like(v) if self.shadow is None else (v > self.shadow).to(v.dtype)

    def log_likelihood(self, v: torch.Tensor, z: Latents) -> torch.Tensor:
        """log p(v | a, N, ℓ) per image [B], over the observed pixels."""
        obs = self.observed(v)
        r = (v - render(z.albedo, z.normal, z.light)) * obs
        var = self.noise_std ** 2
        return -0.5 * (r.pow(2).sum(1) / var + obs.sum(1) * torch.log(torch.tensor(2 * torch.pi * var)))

    def estimate_light(self, v: torch.Tensor) -> torch.Tensor:
        """ℓ from the image alone (a linear map of v / ‖v‖: the image's brightness says nothing of the direction),
        to start the chain."""
        return self.light_net(v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    # ---------------------------------------------------------------- conditionals
    def sample_albedo(self, v: torch.Tensor, normal: torch.Tensor, light: torch.Tensor, h: torch.Tensor,
                      sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        m, var_a = self.prior_given_hidden("albedo", h)
        s = render(torch.ones_like(v), normal, light) * self.observed(v)
        prec = 1 / var_a + s.pow(2) / self.noise_std ** 2
        mean = (m / var_a + v * s / self.noise_std ** 2) / prec
        return mean + torch.randn(mean.shape, generator=generator, dtype=mean.dtype) * prec.rsqrt() if sample \
            else mean

    def sample_normal(self, v: torch.Tensor, albedo: torch.Tensor, normal: torch.Tensor, light: torch.Tensor,
                      g: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        m, D = self.prior_given_hidden("normal", g)
        m, D = m.view(-1, self.pixels, 3), D.view(self.pixels, 3)  # the prior's means and variances per pixel
        lit = self.observed(v)
        u = (lit * albedo / self.noise_std)[..., None] * light[:, None]  # [B, P, 3]; 0 where unobserved
        x = m / D + (lit * albedo * v / self.noise_std ** 2)[..., None] * light[:, None]
        Du = D * u
        den = 1 + (u * Du).sum(-1, keepdim=True)
        mean = D * x - Du * (u * D * x).sum(-1, keepdim=True) / den  # Sherman-Morrison: Λ⁻¹ x
        if not sample:
            return mean
        # Λ⁻¹ = D^½ (I − w wᵀ / (1 + ‖w‖²)) D^½ with w = D^½ u; its square root D^½ (I − γ ŵ ŵᵀ), (1 − γ)² = 1/den
        w = D.sqrt() * u
        w2 = w.pow(2).sum(-1, keepdim=True)
        gamma = 1 - den.rsqrt()
        xi = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        proj = (w * xi).sum(-1, keepdim=True) / w2.clamp_min(1e-30)
        return mean + D.sqrt() * (xi - gamma * proj * w)

    def sample_light(self, v: torch.Tensor, albedo: torch.Tensor, normal: torch.Tensor, light: torch.Tensor,
                     sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        X = (self.observed(v) * albedo)[..., None] * normal  # [B, P, 3]
        var = self.noise_std ** 2
        prec = X.transpose(1, 2) @ X / var + torch.eye(3, dtype=v.dtype) / self.light_std ** 2
        L = torch.linalg.cholesky(prec)
        mean = torch.cholesky_solve((X.transpose(1, 2) @ v[..., None]) / var, L)[..., 0]
        if not sample:
            return mean
        xi = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        # a draw with covariance prec⁻¹ = L⁻ᵀ L⁻¹: solve Lᵀ e = ξ
        return mean + torch.linalg.solve_triangular(L.transpose(1, 2), xi[..., None], upper=True)[..., 0]

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def infer(self, v: torch.Tensor, steps: int = 50, burn_in: int = 20, sample: bool = True,
              generator: torch.Generator | None = None, light: torch.Tensor | None = None) -> Latents:
        """Posterior means of (a, N, ℓ) for images v [B, P] by `steps` sweeps of block Gibbs sampling (the mean of
        the states from sweep `burn_in` on); `sample=False` replaces every draw by its conditional mean (iterated
        conditional modes, deterministic). `light` [B, 3] clamps the light to a known value."""
        if not 0 <= burn_in < steps:
            raise ValueError(f"burn_in={burn_in} must be in [0, steps={steps})")
        B = v.shape[0]
        a = self.albedo_mean.expand(B, -1).clone()
        n = self.normal_mean.view(1, self.pixels, 3).expand(B, -1, -1).clone()
        ell = self.estimate_light(v) if light is None else light
        total = [torch.zeros_like(a), torch.zeros_like(n), torch.zeros_like(ell)]
        for t in range(steps):
            ph = self.prior_hidden("albedo", a)
            h = sample_bernoulli(ph, generator) if sample else ph
            a = self.sample_albedo(v, n, ell, h, sample, generator)
            pg = self.prior_hidden("normal", n.reshape(B, -1))
            g = sample_bernoulli(pg, generator) if sample else pg
            n = self.sample_normal(v, a, n, ell, g, sample, generator)
            if light is None:
                ell = self.sample_light(v, a, n, ell, sample, generator)
            if t >= burn_in:
                for s, x in zip(total, (a, n, ell)):
                    s += x
        k = steps - burn_in
        return Latents(total[0] / k, total[1] / k, total[2] / k)
