"""The measurements of Müller, Kornblith & Hinton (2019), "When Does Label Smoothing Help?", as tensor math:
the projection of penultimate-layer activations onto the plane through three class templates (§2), temperature
scaling for calibration (§3, after Guo et al. 2017), and the equivalent smoothing of a teacher's soft targets (§4).

Label smoothing itself is PyTorch's `F.cross_entropy(logits, y, label_smoothing=α)`: the cross-entropy with the
targets y(1 − α) + α/K.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def with_bias(x: torch.Tensor) -> torch.Tensor:
    """[N, D] -> [N, D + 1] with a trailing 1, so a logit is one dot product xᵀw_k with the bias inside w_k (§1.1)."""
    return torch.cat([x, x.new_ones(len(x), 1)], dim=1)


def template_plane(templates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Origin [D] and orthonormal basis [2, D] of the plane through three class templates [3, D] (§2, step 2).

    The origin is the first template, the first axis points at the second, and the second axis is the part of
    (third − first) orthogonal to it (Gram-Schmidt, as QR with a positive diagonal). So the templates land at
    (0, 0), (|w₁ − w₀|, 0) and (e₁·(w₂ − w₀), |(w₂ − w₀)⊥|)."""
    if templates.ndim != 2 or templates.shape[0] != 3:
        raise ValueError(f"need three templates [3, D], got {tuple(templates.shape)}")
    origin = templates[0]
    q, r = torch.linalg.qr((templates[1:] - origin).T)  # [D, 2], [2, 2]
    d = torch.diagonal(r)
    if bool((d.abs() <= 100 * torch.finfo(r.dtype).eps * r.abs().max()).any()):
        raise ValueError("the three templates are collinear: they span no plane")
    return origin, (q * d.sign()).T


def project_onto_plane(x: torch.Tensor, origin: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Coordinates [N, 2] of the orthogonal projection of points x [N, D] onto the plane (origin, basis)."""
    return (x - origin) @ basis.T


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """Temperature scaling (Guo et al. 2017, which §3 compares with): the T > 0 that minimises the negative
    log-likelihood of softmax(logits / T) on held-out examples, by L-BFGS on log T in float64."""
    z, y = logits.detach().double(), labels.detach()
    log_t = torch.zeros((), dtype=torch.float64, device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(nll)
    return float(log_t.detach().exp())


def equivalent_smoothing(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """γ of §4: the mean probability mass that softmax(logits / T) puts on incorrect classes, times K/(K − 1), so
    that the targets of label smoothing α give γ = α and hard targets γ = 0."""
    p = F.softmax(logits.detach().double() / temperature, dim=1)
    k = p.shape[1]
    return float((1 - p.gather(1, labels[:, None]).squeeze(1)).mean() * k / (k - 1))
