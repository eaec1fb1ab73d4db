"""Mixtures of factor analysers (MFA) and the two-layer deep MFA: exact densities, EM statistics, M-step.

Notation (Ghahramani & Hinton 1996, Tang, Salakhutdinov & Hinton 2012): component k has mixing weight π_k,
mean μ_k [D], factor loadings Λ_k [D, q] and diagonal noise Ψ_k [D]; z ~ N(0, I_q), x | z, k ~ N(μ_k + Λ_k z, Ψ_k),
so x | k ~ N(μ_k, Λ_kΛ_kᵀ + Ψ_k). No D x D matrix is ever formed: with M_k = I + Λ_kᵀΨ_k⁻¹Λ_k (q x q),
    log|Λ_kΛ_kᵀ + Ψ_k| = log|Ψ_k| + log|M_k|                              (matrix determinant lemma)
    eᵀ(Λ_kΛ_kᵀ + Ψ_k)⁻¹e = eᵀΨ_k⁻¹e − |L_k⁻¹u|²,  u = Λ_kᵀΨ_k⁻¹e,  M_k = L_kL_kᵀ   (Woodbury, e = x − μ_k)
with E[z | x, k] = M_k⁻¹u and Cov[z | x, k] = M_k⁻¹. Every term is a matrix product over the whole batch and all
components at once (triangular solves with L_k, never an explicit M_k⁻¹, keep the difference exact when Ψ is tiny).

`MFA` holds G independent mixtures ("groups") in one set of tensors: layer 1 is one group; layer 2 of a deep MFA
has one group per first-layer component (the MFA that replaces that component's N(0, I) factor prior), and each
training vector belongs to one group. Everything is float64: dequantised pixels give noise variances near 1e-6.
"""
from __future__ import annotations

import math

import torch
from torch import nn

Stats = dict[str, torch.Tensor]


def _param(t: torch.Tensor) -> nn.Parameter:
    # parameters (counted, saved, broadcast by DDP) that EM sets in place; no gradient ever flows into them
    return nn.Parameter(t, requires_grad=True)


class MFA(nn.Module):
    """G independent mixtures of K factor analysers on D dimensions with q factors each.

    A fresh MFA is exactly N(0, I_D) in every group (Λ = 0, μ = 0, Ψ = 1): the prior a deep MFA's second layer
    starts from, so the deep model's density equals the first layer's until the second layer is trained.

    Args:
        groups, components, dim, factors: G, K, D, q.
        shared_psi: one Ψ per group shared by its components (Ghahramani & Hinton 1996) instead of one per component.
        min_variance: floor on every Ψ entry (keeps a component on a near-constant pixel finite).
    """

    def __init__(self, groups: int, components: int, dim: int, factors: int, shared_psi: bool = False,
                 min_variance: float = 1e-6):
        super().__init__()
        G, K, D, q = groups, components, dim, factors
        self.shared_psi, self.min_variance = shared_psi, min_variance
        f64 = torch.float64
        self.weight = _param(torch.full((G, K), 1.0 / K, dtype=f64))           # π
        self.mean = _param(torch.zeros(G, K, D, dtype=f64))                     # μ
        self.loading = _param(torch.zeros(G, K, D, q, dtype=f64))               # Λ
        self.psi = _param(torch.ones(G, 1 if shared_psi else K, D, dtype=f64))  # diag Ψ

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.loading.shape)  # type: ignore[return-value]

    # ------------------------------------------------------------------ E-step
    def _precision_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ψ⁻¹ [G,K,D], Ψ⁻¹Λ [G,K,D,q], the Cholesky factor of M [G,K,q,q] and log|Λ Λᵀ + Ψ| [G,K]."""
        G, K, D, q = self.shape
        ipsi = self.psi.reciprocal().expand(G, K, D)
        ipsi_l = ipsi.unsqueeze(-1) * self.loading
        m = torch.eye(q, dtype=ipsi.dtype, device=ipsi.device) + self.loading.transpose(-1, -2) @ ipsi_l
        chol = torch.linalg.cholesky(m)
        logdet = self.psi.log().sum(-1).expand(G, K) + 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return ipsi, ipsi_l, chol, logdet

    def log_joint(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For x [B, D]: log π_k + log N(x; μ_k, Λ_kΛ_kᵀ + Ψ_k) [B,G,K], E[z | x, k] [B,G,K,q], Cov[z | x, k] [G,K,q,q]."""
        G, K, D, q = self.shape
        x = x.to(self.mean.dtype)
        ipsi, ipsi_l, chol, logdet = self._precision_terms()
        mu = self.mean
        # eᵀΨ⁻¹e = Σ x²/ψ − 2 Σ xμ/ψ + Σ μ²/ψ, each a [B,D] x [D,GK] product
        quad = ((x * x) @ ipsi.reshape(G * K, D).T - 2 * x @ (mu * ipsi).reshape(G * K, D).T).view(-1, G, K)
        quad = quad + (mu * mu * ipsi).sum(-1)
        proj = (x @ ipsi_l.permute(2, 0, 1, 3).reshape(D, G * K * q)).view(-1, G, K, q)
        proj = proj - torch.einsum("gkd,gkdq->gkq", mu, ipsi_l)                 # u = Λᵀ Ψ⁻¹ e
        # uᵀM⁻¹u = |L⁻¹u|² with M = LLᵀ, by triangular solves: Ψ near its floor makes M very ill-conditioned,
        # and an explicit M⁻¹ would lose the quadratic form to cancellation
        w = torch.linalg.solve_triangular(chol, proj.permute(1, 2, 3, 0), upper=False)     # [G,K,q,B]
        ez = torch.linalg.solve_triangular(chol.transpose(-1, -2), w, upper=True).permute(3, 0, 1, 2)  # E[z | x, k]
        quad = quad - (w * w).sum(-2).permute(2, 0, 1)                           # Woodbury
        log_n = -0.5 * (D * math.log(2 * math.pi) + logdet + quad)
        return self.weight.log() + log_n, ez, torch.cholesky_inverse(chol)

    def log_prob(self, x: torch.Tensor, group: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) [B] under the example's group (group [B] of indices; None when G = 1)."""
        return _own_group(self.log_joint(x)[0], group).logsumexp(-1)

    @torch.no_grad()
    def statistics(self, x: torch.Tensor, group: torch.Tensor | None = None) -> Stats:
        """The E-step's sufficient statistics of a batch, sums over examples (so they add across batches and
        processes): n = Σ r, xz = Σ r x z̃ᵀ, zz = Σ r E[z̃z̃ᵀ], xx = Σ r x² per group and component, with the
        responsibilities r = p(k | x) and z̃ = [z; 1]; loglik = Σ log p(x), count = B."""
        G, K, D, q = self.shape
        x = x.to(self.mean.dtype)
        lj, ez, m_inv = self.log_joint(x)
        own = _own_group(lj, group)
        ll = own.logsumexp(-1)
        r = (own - ll[:, None]).exp()                                            # [B, K]
        if group is None:
            r = r[:, None]
        else:
            r = torch.zeros(len(x), G, K, dtype=r.dtype, device=r.device).index_put_(
                (torch.arange(len(x), device=x.device), group), r)               # [B, G, K], zero off-group
        z1 = torch.cat([ez, torch.ones_like(ez[..., :1])], -1)                   # z̃ = [E z; 1]
        rz = r.unsqueeze(-1) * z1
        xz = (x.T @ rz.reshape(len(x), -1)).view(D, G, K, q + 1).permute(1, 2, 0, 3)
        zz = torch.einsum("bgkp,bgkq->gkpq", rz, z1)
        n = r.sum(0)
        zz[..., :q, :q] += n[..., None, None] * m_inv
        xx = ((x * x).T @ r.reshape(len(x), -1)).view(D, G, K).permute(1, 2, 0)
        return {"n": n, "xz": xz, "zz": zz, "xx": xx, "loglik": ll.sum(), "count": x.new_tensor(float(len(x)))}

    # ------------------------------------------------------------------ M-step
    @torch.no_grad()
    def m_step(self, s: Stats) -> None:
        """Ghahramani & Hinton's updates from summed statistics: [Λ_k μ_k] = (Σ r x z̃ᵀ)(Σ r E[z̃z̃ᵀ])⁻¹,
        Ψ_k = diag(Σ r x xᵀ − [Λ_k μ_k] Σ r E[z̃] xᵀ) / Σ r (pooled over a group's components when shared),
        π_k = Σ r / N. A component with no responsibility keeps its parameters (its π becomes 0)."""
        G, K, D, q = self.shape
        n, xz, zz, xx = s["n"], s["xz"], s["zz"], s["xx"]
        alive = n > 1e-10 * n.sum(-1, keepdim=True).clamp_min(1e-300)
        eye = torch.eye(q + 1, dtype=zz.dtype, device=zz.device)
        zz = torch.where(alive[..., None, None], zz, eye)
        lam = torch.linalg.solve(zz, xz.transpose(-1, -2)).transpose(-1, -2)     # [Λ μ]: [G,K,D,q+1]
        resid = xx - (lam * xz).sum(-1)                                          # diag(Σ r (x − Λ̃ z̃) xᵀ)
        used = alive.any(-1)                                                     # groups that saw data
        if self.shared_psi:
            psi = (torch.where(alive[..., None], resid, 0).sum(1, keepdim=True)
                   / torch.where(alive, n, 0).sum(1).clamp_min(1e-300)[:, None, None])
            psi = torch.where(used[:, None, None], psi, self.psi)
        else:
            psi = torch.where(alive[..., None], resid / n.clamp_min(1e-300)[..., None], self.psi)
        keep = alive[..., None]
        self.loading.copy_(torch.where(keep[..., None], lam[..., :q], self.loading))
        self.mean.copy_(torch.where(keep, lam[..., q], self.mean))
        self.psi.copy_(psi.clamp_min(self.min_variance))
        self.weight.copy_(torch.where(used[:, None], n / n.sum(-1, keepdim=True).clamp_min(1e-300), self.weight))

    # ------------------------------------------------------------------ initialisation and sampling
    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, generator: torch.Generator, loading_scale: float = 0.5) -> None:
        """One group from data: means at K distinct random examples (with repeats only when fewer than K),
        Ψ = the data's variance, Λ ~ N(0, loading_scale² Var[x_d] / q), π uniform."""
        G, K, D, q = self.shape
        x = x.to(self.mean.dtype)
        idx = (torch.randperm(len(x), generator=generator)[:K] if len(x) >= K
               else torch.randint(len(x), (K,), generator=generator))
        var = x.var(0, unbiased=False).clamp_min(self.min_variance)
        noise = torch.randn(G, K, D, q, generator=generator, dtype=x.dtype).to(x.device)
        self.mean.copy_(x[idx.to(x.device)].expand(G, K, D))
        self.loading.copy_(noise * (loading_scale * (var / q).sqrt())[:, None])
        self.psi.copy_(var.expand_as(self.psi))
        self.weight.fill_(1.0 / K)

    @torch.no_grad()
    def init_around_standard_normal(self, generator: torch.Generator, spread: float = 0.5) -> None:
        """For data that are roughly N(0, I) (a first-layer component's aggregated posterior): component means
        ~ N(0, spread²), Λ ~ N(0, spread²/q), Ψ = 1 − spread², π uniform."""
        G, K, D, q = self.shape
        dev = self.mean.device
        self.mean.copy_(spread * torch.randn(G, K, D, generator=generator, dtype=torch.float64).to(dev))
        self.loading.copy_(spread / math.sqrt(q) * torch.randn(G, K, D, q, generator=generator,
                                                               dtype=torch.float64).to(dev))
        self.psi.fill_(1.0 - spread ** 2)
        self.weight.fill_(1.0 / K)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, group: torch.Tensor | None = None,
               noise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws (x [n, D], component [n]) by ancestral sampling: k ~ π, z ~ N(0, I), x = μ_k + Λ_k z (+ Ψ noise)."""
        G, K, D, q = self.shape
        g = torch.zeros(n, dtype=torch.long) if group is None else group.cpu()
        k = torch.multinomial(self.weight.detach().cpu()[g], 1, generator=generator)[:, 0]
        z = torch.randn(n, q, 1, generator=generator, dtype=torch.float64)
        x = self.mean.detach().cpu()[g, k] + (self.loading.detach().cpu()[g, k] @ z)[..., 0]
        if noise:
            psi = self.psi.detach().cpu().expand(G, K, D)[g, k]
            x = x + psi.sqrt() * torch.randn(n, D, generator=generator, dtype=torch.float64)
        return x.to(self.mean.device), k.to(self.mean.device)

    @torch.no_grad()
    def sample_posterior(self, x: torch.Tensor, generator: torch.Generator | None = None,
                         assign: str = "sample") -> tuple[torch.Tensor, torch.Tensor]:
        """One draw (z [B, q], k [B]) from p(k, z | x) of a one-group MFA: k ~ p(k | x) ("sample") or its most
        probable value ("argmax"), then z ~ N(E[z | x, k], M_k⁻¹)."""
        lj, ez, m_inv = self.log_joint(x)
        lj, ez, m_inv = lj[:, 0], ez[:, 0], m_inv[0]
        B, K, q = ez.shape
        # the random numbers come from `generator` on the CPU, whatever the device: the same draws everywhere
        u = torch.rand(B, 1, generator=generator, dtype=ez.dtype).to(ez.device)
        eps = torch.randn(B, q, 1, generator=generator, dtype=ez.dtype).to(ez.device)
        if assign == "argmax":
            k = lj.argmax(-1)
        else:  # inverse CDF of p(k | x)
            k = (lj.softmax(-1).cumsum(-1) < u).sum(-1).clamp_max(K - 1)
        z = ez[torch.arange(B, device=ez.device), k] + (torch.linalg.cholesky(m_inv)[k] @ eps)[..., 0]
        return z, k


def _own_group(lj: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
    """[B, G, K] -> [B, K]: each example's own group."""
    if group is None:
        if lj.shape[1] != 1:
            raise ValueError(f"{lj.shape[1]} groups: pass each example's group")
        return lj[:, 0]
    return lj[torch.arange(len(lj), device=lj.device), group]


# ---------------------------------------------------------------------- the deep MFA
def factor_covariance(bottom: MFA) -> torch.Tensor:
    """S_ck = V_ck V_ckᵀ + Ψ_ck [C,K,d,d]: the second layer's covariance of the first-layer factors."""
    C, K, d, _ = bottom.shape
    return bottom.loading @ bottom.loading.transpose(-1, -2) + torch.diag_embed(bottom.psi.expand(C, K, d))


def dmfa_log_joint(top: MFA, bottom: MFA, x: torch.Tensor) -> torch.Tensor:
    """log π_c π_k|c + log p(x | c, k) [B, C, K] of the two-layer DMFA.

    With the second-layer MFA of component c as the prior of its factors, z | c, k ~ N(m_ck, S_ck), the data are
    x | c, k ~ N(μ_c + W_c m_ck, W_c S_ck W_cᵀ + Ψ_c): again a factor analyser, so the deep model is a shallow MFA
    of C·K components (what `collapse` builds). Its density is computed without any D x d product per (c, k):
    with P_c = W_cᵀΨ_c⁻¹W_c, u_c = W_cᵀΨ_c⁻¹(x − μ_c), s_c = (x − μ_c)ᵀΨ_c⁻¹(x − μ_c) (D-dimensional work once
    per first-layer component) and H_ck = S_ck⁻¹ + P_c, v = u_c − P_c m_ck,
        log|Cov| = log|Ψ_c| + log|S_ck| + log|H_ck|,   quad = s_c − 2 m_ckᵀu_c + m_ckᵀP_c m_ck − vᵀH_ck⁻¹v.
    """
    C, K, d, _ = bottom.shape
    D = top.shape[2]
    x = x.to(top.mean.dtype)
    w, mu = top.loading[0], top.mean[0]                                      # [C,D,d], [C,D]
    ipsi = top.psi[0].reciprocal().expand(C, D)
    ipsi_w = ipsi.unsqueeze(-1) * w
    p = w.transpose(-1, -2) @ ipsi_w                                         # P_c [C,d,d]
    s = ((x * x) @ ipsi.T - 2 * x @ (mu * ipsi).T) + (mu * mu * ipsi).sum(-1)  # [B,C]
    u = (x @ ipsi_w.permute(1, 0, 2).reshape(D, C * d)).view(-1, C, d) - torch.einsum("cd,cdq->cq", mu, ipsi_w)
    cov = factor_covariance(bottom)                                          # S [C,K,d,d]
    chol_s = torch.linalg.cholesky(cov)
    h = torch.cholesky_inverse(chol_s) + p[:, None]
    chol_h = torch.linalg.cholesky(h)
    m = bottom.mean                                                          # [C,K,d]
    pm = torch.einsum("cpq,ckq->ckp", p, m)
    v = u[:, :, None] - pm                                                   # [B,C,K,d]
    t = torch.linalg.solve_triangular(chol_h, v.permute(1, 2, 3, 0), upper=False)  # vᵀH⁻¹v = |L_H⁻¹ v|²
    quad = s[:, :, None] - 2 * torch.einsum("ckd,bcd->bck", m, u) + (m * pm).sum(-1) - (t * t).sum(-2).permute(2, 0, 1)
    logdet = (top.psi[0].log().sum(-1).expand(C)[:, None]
              + 2 * chol_s.diagonal(dim1=-2, dim2=-1).log().sum(-1)
              + 2 * chol_h.diagonal(dim1=-2, dim2=-1).log().sum(-1))
    log_n = -0.5 * (D * math.log(2 * math.pi) + logdet + quad)
    return top.weight[0].log()[:, None] + bottom.weight.log() + log_n


def dmfa_log_prob(top: MFA, bottom: MFA, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x) [B] of the two-layer DMFA (top: one group of C components with d factors; bottom: C groups)."""
    return dmfa_log_joint(top, bottom, x).flatten(1).logsumexp(-1)


@torch.no_grad()
def collapse(top: MFA, bottom: MFA) -> MFA:
    """The equivalent shallow MFA of C·K components with d factors each: component (c, k) has weight π_c π_k|c,
    mean μ_c + W_c m_ck, loadings W_c A_ck with A_ck A_ckᵀ = S_ck (Cholesky) and noise Ψ_c."""
    C, K, d, _ = bottom.shape
    D = top.shape[2]
    out = MFA(1, C * K, D, d, shared_psi=False, min_variance=top.min_variance).to(top.mean.device)
    w = top.loading[0]
    out.weight.copy_((top.weight[0][:, None] * bottom.weight).reshape(1, C * K))
    out.mean.copy_((top.mean[0][:, None] + torch.einsum("cdq,ckq->ckd", w, bottom.mean)).reshape(1, C * K, D))
    out.loading.copy_((w[:, None] @ torch.linalg.cholesky(factor_covariance(bottom))).reshape(1, C * K, D, d))
    out.psi.copy_(top.psi[0].expand(C, D)[:, None].expand(C, K, D).reshape(1, C * K, D))
    return out


@torch.no_grad()
def dmfa_sample(top: MFA, bottom: MFA, n: int, generator: torch.Generator, noise: bool = True) -> torch.Tensor:
    """Ancestral samples of the DMFA: c ~ π, z from the second-layer MFA of c, x = μ_c + W_c z (+ Ψ_c noise)."""
    c = torch.multinomial(top.weight.detach().cpu()[0], n, replacement=True, generator=generator)
    z, _ = bottom.sample(n, generator, group=c, noise=True)
    z = z.cpu()
    x = top.mean.detach().cpu()[0, c] + (top.loading.detach().cpu()[0, c] @ z[..., None])[..., 0]
    if noise:
        D = top.shape[2]
        x = x + top.psi.detach().cpu()[0].expand(top.shape[1], D)[c].sqrt() * torch.randn(
            n, D, generator=generator, dtype=torch.float64)
    return x


def num_parameters(*layers: MFA) -> int:
    return sum(p.numel() for layer in layers for p in layer.parameters())
