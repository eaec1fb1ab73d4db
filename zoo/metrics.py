"""Representation similarity (Kornblith, Norouzi, Lee & Hinton 2019): linear and RBF centred kernel
alignment (CKA), their debiased forms, and a torchmetrics CKA that accumulates minibatches exactly.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K, L the centred Gram matrices of two
representations of the same n examples. Computed in float64.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["CKA", "cka", "center_gram", "gram_linear", "gram_rbf", "linear_cka", "mean_squared_cca", "rbf_cka"]


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).to(torch.float64)


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    x = _f64(x)
    return x @ x.T


def _median(values: torch.Tensor) -> torch.Tensor:
    """numpy's median (the mean of the two middle values for an even count), without quantile's size limit."""
    flat, m = values.flatten(), values.numel()
    lo = flat.kthvalue((m + 1) // 2).values
    return lo if m % 2 else (lo + flat.kthvalue(m // 2 + 1).values) / 2


def gram_rbf(x: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """exp(−d²_ij / (2σ²)) with σ = threshold × the median pairwise distance (the official notebook takes the
    median of all n² squared distances, the zero diagonal included)."""
    dot = gram_linear(x)
    sq_norms = dot.diagonal()
    sq_dist = sq_norms[:, None] + sq_norms[None, :] - 2 * dot
    return torch.exp(-sq_dist / (2 * threshold**2 * _median(sq_dist)))


def center_gram(gram: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Double centring H K H; `unbiased` gives the U-statistic form of Song et al. (2012) behind debiased HSIC
    (zero diagonal, means over n−2 with the grand-mean correction)."""
    gram = gram.clone()
    n = gram.shape[0]
    if unbiased:
        gram.fill_diagonal_(0)
        means = gram.sum(0) / (n - 2)
        means = means - means.sum() / (2 * (n - 1))
    else:
        means = gram.mean(0)
        means = means - means.mean() / 2
    gram = gram - means[:, None] - means[None, :]
    if unbiased:
        gram.fill_diagonal_(0)
    return gram


def cka(gram_x: torch.Tensor, gram_y: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """CKA from two Gram matrices over the same examples."""
    kx, ky = center_gram(gram_x, debiased), center_gram(gram_y, debiased)
    return (kx * ky).sum() / (kx.norm() * ky.norm())


def linear_cka(x: torch.Tensor, y: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """Linear CKA of representations x [n, p] and y [n, q] (rows: the same examples), in feature space:
    ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) after centring each feature — O(n·p·q) instead of O(n²)."""
    x, y = _f64(x), _f64(y)
    x, y = x - x.mean(0), y - y.mean(0)
    xy, xx, yy = (y.T @ x).pow(2).sum(), (x.T @ x).pow(2).sum(), (y.T @ y).pow(2).sum()
    if debiased:
        n = x.shape[0]
        rx, ry = x.pow(2).sum(1), y.pow(2).sum(1)

        def unbiased(dot: torch.Tensor, ra: torch.Tensor, rb: torch.Tensor) -> torch.Tensor:
            return dot - n / (n - 2) * (ra @ rb) + ra.sum() * rb.sum() / ((n - 1) * (n - 2))

        xy, xx, yy = unbiased(xy, rx, ry), unbiased(xx, rx, rx), unbiased(yy, ry, ry)
    return xy / (xx.sqrt() * yy.sqrt())


def rbf_cka(x: torch.Tensor, y: torch.Tensor, threshold: float = 0.5, debiased: bool = False) -> torch.Tensor:
    """RBF-kernel CKA; the bandwidth is `threshold` times the median pairwise distance of each representation."""
    return cka(gram_rbf(x, threshold), gram_rbf(y, threshold), debiased)


def mean_squared_cca(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """R²_CCA, the mean squared canonical correlation the paper compares CKA with: ‖Q_xᵀ Q_y‖²_F / min(p, q)
    with Q the orthonormal bases (reduced QR) of x [n, p] and y [n, q]. Like the official notebook, it does
    not centre: centre the features first for the textbook definition."""
    qx, qy = torch.linalg.qr(_f64(x))[0], torch.linalg.qr(_f64(y))[0]
    return (qx.T @ qy).pow(2).sum() / min(qx.shape[1], qy.shape[1])


class CKA(Metric):
    """Linear CKA over a whole dataset, accumulated minibatch by minibatch and exact: it keeps the sums
    Σx, Σy, XᵀY, XᵀX, YᵀY (summed across processes under DDP), from which the centred cross-covariances
    and hence ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) follow. Memory is O((p + q)²), independent of n."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, dim_x: int, dim_y: int, **kwargs):
        super().__init__(**kwargs)
        f64 = dict(dtype=torch.float64)
        self.add_state("n", torch.zeros((), **f64), dist_reduce_fx="sum")
        self.add_state("sx", torch.zeros(dim_x, **f64), dist_reduce_fx="sum")
        self.add_state("sy", torch.zeros(dim_y, **f64), dist_reduce_fx="sum")
        self.add_state("xy", torch.zeros(dim_x, dim_y, **f64), dist_reduce_fx="sum")
        self.add_state("xx", torch.zeros(dim_x, dim_x, **f64), dist_reduce_fx="sum")
        self.add_state("yy", torch.zeros(dim_y, dim_y, **f64), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = _f64(x), _f64(y)
        self.n += x.shape[0]
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xy += x.T @ y
        self.xx += x.T @ x
        self.yy += y.T @ y

    def compute(self) -> torch.Tensor:
        mx, my = self.sx / self.n, self.sy / self.n
        cxy = self.xy - self.n * torch.outer(mx, my)
        cxx = self.xx - self.n * torch.outer(mx, mx)
        cyy = self.yy - self.n * torch.outer(my, my)
        return cxy.pow(2).sum() / (cxx.norm() * cyy.norm())
