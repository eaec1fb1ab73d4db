"""Gaussian-Bernoulli RBM, as "Gaussian-Bernoulli RBMs Without Tears" (Liao, Kornblith, Ren, Fleet & Hinton,
arXiv 2210.10318) writes it: energy, conditionals, free energy, partition function, the Gibbs and Gibbs-Langevin
samplers (with the optional Metropolis-Hastings adjustment) and the sufficient statistics of contrastive divergence.
Shared by that paper's package and by Deep Lambertian Networks, whose albedo and normal priors are GRBMs.

    E(v, h) = ½ ‖(v − μ) / σ‖² − (v / σ²)ᵀ W h − bᵀ h,   σ² = exp(log_var) learned per visible unit
    p(h_j = 1 | v) = sigmoid(Wᵀ(v / σ²) + b)_j,          p(v | h) = N(μ + W h, diag σ²)
    F(v) = −log Σ_h e^{−E(v,h)} = ½ ‖(v − μ) / σ‖² − Σ_j softplus(Wᵀ(v / σ²) + b)_j

Samplers run many chains at once (rows of v); the only Python loops are over time steps.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + eˣ) = max(x, 0) − log σ(|x|): exact, and several times faster on CPU than F.softplus, whose
    log1p is not vectorised there (the free energy and the MH ratio evaluate it for every hidden unit)."""
    return x.clamp_min(0) - torch.sigmoid(x.abs()).log()


def sample_bernoulli(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """h ~ Bernoulli(p) elementwise, as 1[u < p] with u ~ U(0, 1) (faster on CPU than torch.bernoulli)."""
    return (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).to(p.dtype)


@contextlib.contextmanager
def few_threads_for_small(macs: int, threshold: int = 1 << 20):
    """Run a chain on one intra-op thread when its matrix products are small (fewer than `threshold`
    multiply-adds, e.g. the 2-D mixtures: 100 x 2 x 256): threads cannot speed those up, and on a busy machine
    their synchronisation stalls every one of the few dozen small ops of a step (measured 7x slower here)."""
    n = torch.get_num_threads()
    if macs >= threshold or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def cosine_steps(eta_max: float, k: int) -> list[float]:
    """The Langevin step sizes η_t = η_max (1 + cos(π t / K)) / 2, t = 0..K−1 (the reference code's anneal)."""
    return [eta_max * (1 + math.cos(math.pi * t / k)) / 2 for t in range(k)]


class ChainStats:
    """Running sums over visited states (v, h) — n, Σ v, Σ v², Σ h, Σ v hᵀ, kept per chain row until `grad` —
    from which the mean of ∂E/∂θ over all of them follows in closed form, so a CD chain never stores its
    states. Also counts Metropolis-Hastings proposals and acceptances."""

    def __init__(self, model: "GRBM"):
        self.W = model.W.detach()
        self.n = 0
        self.rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # Σ v, Σ v², Σ h per chain
        self.folded = [self.W.new_zeros(self.W.shape[0]), self.W.new_zeros(self.W.shape[0]),
                       self.W.new_zeros(self.W.shape[1])]
        self.s_vh = torch.zeros_like(self.W)
        self.proposed = 0
        self.accepted = self.W.new_zeros(())

    def add(self, v: torch.Tensor, h: torch.Tensor) -> None:
        if self.rows is None or self.rows[0].shape[0] != v.shape[0]:
            self._fold()
            self.rows = (torch.zeros_like(v), torch.zeros_like(v), torch.zeros_like(h))
        s_v, s_v2, s_h = self.rows
        self.n += v.shape[0]
        s_v.add_(v)
        s_v2.addcmul_(v, v)
        s_h.add_(h)
        self.s_vh.addmm_(v.T, h)

    def _fold(self) -> None:
        """Add the per-chain sums into the totals (before rows of another count arrive, or before `grad`)."""
        if self.rows is not None:
            for total, part in zip(self.folded, self.rows):
                total += part.sum(0)
            self.rows = None

    @property
    def acceptance(self) -> float | None:
        return float(self.accepted) / self.proposed if self.proposed else None

    def grad(self, model: "GRBM") -> dict[str, torch.Tensor]:
        """The mean over the recorded states of ∂E(v, h)/∂θ for θ = W, b, μ, log σ²:
        ∂E/∂W = −(v/σ²) hᵀ, ∂E/∂b = −h, ∂E/∂μ = (μ − v)/σ², ∂E/∂log σ² = −½(v − μ)²/σ² + (v/σ²) ⊙ W h,
        with Σ_n v ⊙ W h_n = rowsum(W ⊙ Σ_n v hᵀ) and Σ (v − μ)² = Σ v² − 2μ Σ v + n μ²."""
        self._fold()
        var, mu, n = model.var.detach(), model.mu.detach(), self.n
        s_v, s_v2, s_h = self.folded
        sq = s_v2 - 2 * mu * s_v + n * mu.pow(2)
        return {
            "W": -self.s_vh / var[:, None] / n,
            "b": -s_h / n,
            "mu": (mu - s_v / n) / var,
            "log_var": (-0.5 * sq + (self.W * self.s_vh).sum(1)) / var / n,
        }


class GRBM(nn.Module):
    """W [V, H], b [H], μ [V], log σ² [V]; initialised as in the reference code (W ~ N(0, s/√(V+H)),
    b = μ = 0, σ² = s with s = init_var)."""

    def __init__(self, visible: int, hidden: int, init_var: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(visible, hidden) * init_var / math.sqrt(visible + hidden))
        self.b = nn.Parameter(torch.zeros(hidden))
        self.mu = nn.Parameter(torch.zeros(visible))
        self.log_var = nn.Parameter(torch.full((visible,), math.log(init_var)))

    @property
    def var(self) -> torch.Tensor:
        return self.log_var.exp().clamp_min(1e-8)

    # ---------------------------------------------------------------- energy and conditionals
    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) per row: [B, V], [B, H] -> [B]."""
        var = self.var
        return 0.5 * ((v - self.mu).pow(2) / var).sum(1) - ((v / var) @ self.W * h).sum(1) - h @ self.b

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b, v / self.var, self.W)

    def p_h_given_v(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.hidden_logits(v))

    def mean_v_given_h(self, h: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.mu, h, self.W.T)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = −log Σ_h exp(−E(v, h)) per row: the negative unnormalised log density of v."""
        return 0.5 * ((v - self.mu).pow(2) / self.var).sum(1) - softplus(self.hidden_logits(v)).sum(1)

    def energy_grad_v(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """∇_v E(v, h) = (v − μ − W h) / σ² per row."""
        return (v - self.mean_v_given_h(h)) / self.var

    def reconstruction_error(self, v: torch.Tensor) -> torch.Tensor:
        """Mean squared error of v against μ + W p(h|v) (the reference code's training monitor)."""
        return (v - self.mean_v_given_h(self.p_h_given_v(v))).pow(2).mean()

    # ---------------------------------------------------------------- normaliser
    @torch.no_grad()
    def log_partition(self, chunk: int = 4096) -> torch.Tensor:
        """log Z exactly, by enumerating the 2^H hidden states (small H only):
        Z = Σ_h ∫ e^{−E(v,h)} dv = Σ_h (2π)^{V/2} Π σ_i · exp(bᵀh + ½‖(μ + W h)/σ‖² − ½‖μ/σ‖²)."""
        H = self.W.shape[1]
        if H > 24:
            raise ValueError(f"enumerating 2^{H} hidden states is not feasible; use log_partition_grid (V = 2)")
        var, bits = self.var, 2 ** torch.arange(H - 1, -1, -1, device=self.W.device)
        parts = []
        for start in range(0, 2**H, chunk):
            idx = torch.arange(start, min(start + chunk, 2**H), device=self.W.device)
            h = ((idx[:, None] // bits) % 2).to(self.W.dtype)
            parts.append(h @ self.b + 0.5 * (self.mean_v_given_h(h).pow(2) / var).sum(1))
        const = (0.5 * self.W.shape[0] * math.log(2 * math.pi) + 0.5 * var.log().sum()
                 - 0.5 * (self.mu.pow(2) / var).sum())
        return torch.logsumexp(torch.cat(parts), 0) + const

    @torch.no_grad()
    def log_partition_grid(self, limit: float = 16.0, n: int = 801, chunk: int = 65536) -> torch.Tensor:
        """log Z of a 2-D GRBM by quadrature of e^{−F(v)} on an n x n grid over [−limit, limit]² (any H);
        the density is a mixture of Gaussians, so the midpoint sum converges fast."""
        if self.W.shape[0] != 2:
            raise ValueError("grid quadrature is for 2-D visible units")
        xs = torch.linspace(-limit, limit, n, device=self.W.device, dtype=self.W.dtype)
        grid = torch.cartesian_prod(xs, xs)
        neg_f = torch.cat([-self.free_energy(g) for g in grid.split(chunk)])
        return torch.logsumexp(neg_f, 0) + 2 * math.log(float(xs[1] - xs[0]))

    @torch.no_grad()
    def log_partition_ais(self, chains: int = 100, steps: int = 10000, generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """log Z by annealed importance sampling (Neal 2001; Salakhutdinov & Murray 2008) for any size: the
        chain anneals E_β(v, h) = ½‖(v − μ)/σ‖² − β (v/σ²)ᵀW h − bᵀh from β = 0 (v ~ N(μ, σ²), h independent,
        log Z_0 = V/2 log 2π + ½ Σ log σ² + Σ softplus(b)) to β = 1 on `steps` equal increments, one Gibbs sweep
        at each β, every chain at once. The importance weight of a step is F_{β_{k−1}}(v) − F_{β_k}(v) = Σ_j
        softplus(b_j + β_k a_j) − softplus(b_j + β_{k−1} a_j) with a = Wᵀ(v/σ²) (h summed out).
        Returns (log mean w + log Z_0, its standard error by the delta method); the estimate of Z is unbiased,
        so log Z is slightly underestimated on average, by about half the squared relative error."""
        var = self.var
        std, mu, b, Wp, Wt = var.sqrt(), self.mu, self.b, self.W * (1 / var)[:, None], self.W.T
        betas = torch.linspace(0.0, 1.0, steps + 1).tolist()
        v = torch.addcmul(mu.expand(chains, -1), std,
                          torch.randn(chains, mu.numel(), generator=generator, device=mu.device, dtype=mu.dtype))
        log_w = torch.zeros(chains, device=mu.device, dtype=torch.float64)
        with few_threads_for_small(chains * self.W.numel()):
            for prev, beta in zip(betas, betas[1:]):
                a = v @ Wp
                log_w += (softplus(b + beta * a) - softplus(b + prev * a)).sum(1).double()
                h = self._bernoulli(b + beta * a, generator)
                v = torch.addcmul(torch.addmm(mu, h, Wt, alpha=beta), std,
                                  torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype))
        log_z0 = 0.5 * mu.numel() * math.log(2 * math.pi) + 0.5 * var.log().sum() + softplus(b).sum()
        log_mean_w = torch.logsumexp(log_w, 0) - math.log(chains)
        w = (log_w - log_w.max()).exp()
        rel_se = w.std() / w.mean() / math.sqrt(chains)
        return (log_mean_w + log_z0.double()).to(var.dtype), rel_se.to(var.dtype)

    # ---------------------------------------------------------------- samplers
    def _bernoulli(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return sample_bernoulli(torch.sigmoid(logits), generator)

    def _chain_constants(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(σ², 1/σ², W/σ² [V, H], Wᵀ, b): what every chain step reuses, computed once per chain."""
        var = self.var.detach()
        prec = 1 / var
        return var, prec, self.W.detach() * prec[:, None], self.W.detach().T, self.b.detach()

    @torch.no_grad()
    def gibbs(self, v: torch.Tensor, steps: int, generator: torch.Generator | None = None,
              stats: ChainStats | None = None, burn_in: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Block Gibbs sampling: h ~ p(h|v), v ~ N(μ + W h, σ²), `steps` times, for every row at once.
        Every state (v, h) from step `burn_in` on is added to `stats`."""
        var, _, Wp, Wt, b = self._chain_constants()
        std, mu = var.sqrt(), self.mu.detach()
        with few_threads_for_small(v.shape[0] * self.W.numel()):
            h = self._bernoulli(torch.addmm(b, v, Wp), generator)
            for t in range(steps):
                m = torch.addmm(mu, h, Wt)
                v = torch.addcmul(m, std, torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype))
                h = self._bernoulli(torch.addmm(b, v, Wp), generator)
                if stats is not None and t >= burn_in:
                    stats.add(v, h)
        return v, h

    def langevin_kernel(self, etas: list[float], temperature: float = 1.0
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The K Langevin steps on v given h, v ← v − η_k ∇_v E(v, h) + √(2 η_k T) ξ_k, are linear in v because
        E is quadratic in v: with m = μ + W h and α_k = 1 − η_k / σ²,
            v_K = A v_0 + c ⊙ m + Σ_k β_k √(2 η_k T) ξ_k,   β_k = Π_{j>k} α_j,  A = Π_k α_k,  c = Σ_k β_k η_k / σ²,
        i.e. v_K ~ N(A v_0 + c ⊙ m, diag s²) with s² = Σ_k β_k² 2 η_k T. Returns (A, c, s) per visible unit.
        Nothing here depends on the number of chains."""
        var = self.var.detach()
        eta = torch.tensor(etas, dtype=var.dtype, device=var.device)[:, None]  # [K, 1]
        alpha = 1 - eta / var  # [K, V]
        beta = torch.cat([alpha.flip(0).cumprod(0).flip(0)[1:], torch.ones_like(var)[None]])  # Π_{j>k} α_j
        A = alpha.prod(0)
        c = (beta * eta / var).sum(0)
        s = (beta.pow(2) * 2 * eta * temperature).sum(0).sqrt()
        return A, c, s

    @staticmethod
    def _neg_free_energy(v: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor,
                         half_prec: torch.Tensor) -> torch.Tensor:
        """−F(v) per row from the cached logits of p(h | v): Σ_j softplus(logits_j) − ½‖(v − μ)/σ‖²."""
        return softplus(logits).sum(1) - (v - mu).pow(2) @ half_prec

    def gibbs_langevin_log_ratio(self, old: tuple[torch.Tensor, ...], new: tuple[torch.Tensor, ...],
                                 kernel: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """log of the Metropolis-Hastings ratio of the Gibbs-Langevin move (v, h) -> (v', h') per chain, for the
        target π(v, h) ∝ exp(−E(v, h)) and the proposal q(v', h' | v, h) = N(v'; A v + c ⊙ m, s²) p(h' | v'):
            log π(v', h') q(v, h | v', h') − log π(v, h) q(v', h' | v, h)
          = F(v) − F(v') + log N(v; A v' + c ⊙ m', s²) − log N(v'; A v + c ⊙ m, s²),
        because −E(v, h) − log p(h | v) = −F(v). `old`/`new` are (v, h, m = μ + W h, logits of p(h | v));
        `kernel` is `langevin_kernel`'s (A, c, s)."""
        A, c, s = kernel
        (v0, _, m0, l0), (v1, _, m1, l1) = old, new
        mu, half_prec = self.mu, 0.5 / self.var
        psi0, psi1 = self._neg_free_energy(v0, l0, mu, half_prec), self._neg_free_energy(v1, l1, mu, half_prec)
        return self._log_ratio(psi0, psi1, v0, v1, m1, (v1 - A * v0 - c * m0) / s, kernel, s.pow(-2))

    @staticmethod
    def _log_ratio(psi0, psi1, v0, v1, m1, noise, kernel, inv_s2) -> torch.Tensor:
        """ψ(new) − ψ(old) + log N(v; A v' + c m', s²) − log N(v'; A v + c m, s²) with ψ = −F, the forward
        residual being s ⊙ noise (the Gaussian normalisers cancel: s does not depend on the state)."""
        A, c, _ = kernel
        back = torch.addcmul(torch.addcmul(v0, A, v1, value=-1), c, m1, value=-1)
        return psi1 - psi0 - 0.5 * (back.pow(2) @ inv_s2 - noise.pow(2).sum(1))

    @torch.no_grad()
    def gibbs_langevin(self, v: torch.Tensor, steps: int, langevin_steps: int = 10, eta: float = 1.0,
                       anneal: bool = True, temperature: float = 1.0, mh_from: int | None = None,
                       generator: torch.Generator | None = None, stats: ChainStats | None = None,
                       burn_in: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Gibbs-Langevin sampling (§4): h ~ p(h|v), then `langevin_steps` Langevin steps on v under E(v, h), each
        chain on its own, v ← v − η_t ∇_v E(v, h) + √(2 η_t T) ξ, with η_t the cosine schedule from `eta` (or
        constant `eta`). T = 1 is the paper's equation, whose unadjusted steps target p(v | h) ∝ exp(−E(v, h)).

        The K steps given h are drawn in one go from their exact Gaussian composition (`langevin_kernel`); that
        is the same Markov kernel as running them one by one, and m = μ + W h is computed once per step, so a
        step costs two matrix products whatever K is.

        eta, temperature: η and T per chain. The reference code takes the gradient of the energy averaged over
            its B chains but adds the noise √(2 η_ref) ξ unscaled, so its step η_ref is η = η_ref / B at T = B
            here: its recipes (η_ref = 20 · mean σ² at batch 512) are η = 20/512 · mean σ², T = 512, the same
            moves as there at that batch size, and the same per-chain moves at any other number of chains.
        mh_from: from this step on, each chain's move (v, h) -> (v', h') is accepted with the Metropolis-Hastings
            probability for the GRBM's own p(v, h) ∝ exp(−E(v, h)) (`gibbs_langevin_log_ratio`), else the chain
            stays: the adjusted chain leaves the model invariant whatever η and T are. (The reference code's commit
            b1ea462 also divides this energy by B, so its adjusted chain targets exp(−E/B); run on CPU with its
            own 2-D mixture config, that version drives one σ² to ~1e-3 within 10 epochs, while the target
            exp(−E), as before that commit, trains.)
        stats: receives every state from step `burn_in` on, and the MH acceptance counts."""
        etas = cosine_steps(eta, langevin_steps) if anneal else [eta] * langevin_steps
        kernel = A, c, s = self.langevin_kernel(etas, temperature)
        _, prec, Wp, Wt, b = self._chain_constants()
        mu, half_prec, inv_s2 = self.mu.detach(), 0.5 * prec, s.pow(-2)
        with few_threads_for_small(v.shape[0] * self.W.numel()):
            logits = torch.addmm(b, v, Wp)
            h = self._bernoulli(logits, generator)
            m = torch.addmm(mu, h, Wt)
            psi = None  # −F(v) of the current state, kept while the adjustment is on
            accepted = v.new_zeros(v.shape[0])
            for t in range(steps):
                noise = torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
                v_new = torch.addcmul(torch.addcmul(c * m, A, v), s, noise)
                logits_new = torch.addmm(b, v_new, Wp)
                h_new = self._bernoulli(logits_new, generator)
                m_new = torch.addmm(mu, h_new, Wt)
                if mh_from is not None and t >= mh_from:
                    psi = self._neg_free_energy(v, logits, mu, half_prec) if psi is None else psi
                    psi_new = self._neg_free_energy(v_new, logits_new, mu, half_prec)
                    log_r = self._log_ratio(psi, psi_new, v, v_new, m_new, noise, kernel, inv_s2)
                    u = torch.rand(log_r.shape, generator=generator, device=v.device, dtype=v.dtype)
                    keep = u.log() < log_r
                    accepted += keep
                    psi = torch.where(keep, psi_new, psi)
                    keep = keep[:, None]
                    v, h, m = torch.where(keep, v_new, v), torch.where(keep, h_new, h), torch.where(keep, m_new, m)
                    if stats is not None:
                        stats.proposed += keep.numel()
                else:
                    v, h, m, logits = v_new, h_new, m_new, logits_new
                if stats is not None and t >= burn_in:
                    stats.add(v, h)
            if stats is not None:
                stats.accepted.add_(accepted.sum())
        return v, h
