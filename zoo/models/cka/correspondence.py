"""The paper's sanity check for similarity indexes (§6.1, Table 2): for every pair of networks trained from
different seeds and every layer of the first, is the most similar layer of the second the corresponding one?

Every index compared here is a normalised inner product of one n x n matrix per representation, so each
representation's matrix is made once and all pairs come from one matrix product:

- linear CKA: centred linear Gram matrices (zoo.metrics.gram_linear, center_gram), cosine of the pair;
- RBF CKA: the same with zoo.metrics.gram_rbf. σ = threshold x the median pairwise distance, so the kernel at
  threshold t is the kernel at threshold 1 raised to the power 1/t²: one kernel matrix serves every threshold;
- R²_CCA (zoo.metrics.mean_squared_cca on centred features): ‖Q_xᵀQ_y‖²_F / min(p, q) = ⟨P_x, P_y⟩ / min(p, q)
  with P = QQᵀ the projection onto a representation's span.
The results equal zoo.metrics' pairwise functions (tests check it).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from zoo.metrics import center_gram, gram_linear, gram_rbf


def similarity_matrices(reps: list[torch.Tensor], rbf_thresholds: list[float] = (0.2, 0.4, 0.8),
                        ) -> dict[str, torch.Tensor]:
    """Similarity of every (member, layer) representation with every other.

    Args:
        reps: one tensor per layer, [n, M, ...] (the n examples, M networks, any feature shape; flattened).
        rbf_thresholds: σ of each RBF CKA as a fraction of the median distance (Table 2: 0.2, 0.4, 0.8).
    Returns:
        {index name: S [M, L, M, L]} with S[a, i, b, j] the similarity of layer i of member a and layer j of b,
        for "linear_cka", "rbf_cka_<t>" for each threshold and "cca_r2". Memory: M·L float32 matrices of
        n x n per index (the RBF thresholds together).
    """
    members, layers = reps[0].shape[1], len(reps)

    def each():  # [n, p] features of every representation, member-major
        return (rep[:, m].flatten(1) for m in range(members) for rep in reps)

    out = {"linear_cka": _cosines(center_gram(gram_linear(x)) for x in each())}
    rbf = {t: [] for t in rbf_thresholds}
    for x in each():
        k1 = gram_rbf(x, 1.0)  # exp(−d²/(2σ₁²)); at threshold t the kernel is this to the power 1/t²
        for t, flats in rbf.items():
            flats.append(_flat(center_gram(k1.pow(1.0 / t**2))))
    out.update({f"rbf_cka_{t:g}": _cosines(flats) for t, flats in rbf.items()})
    rank = torch.tensor([_projection(x, basis_only=True) for x in each()], dtype=torch.float64)
    out["cca_r2"] = _cosines((_projection(x) for x in each()), normalise=False) / torch.minimum(rank[:, None],
                                                                                                rank[None, :])
    return {k: v.view(members, layers, members, layers) for k, v in out.items()}


def _flat(m: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """A matrix as a flat float32 vector, scaled to unit Frobenius norm when `normalise`."""
    return (m / m.norm() if normalise else m).flatten().float()


def _cosines(mats: Iterable[torch.Tensor], normalise: bool = True) -> torch.Tensor:
    """Frobenius inner products of every pair of matrices, as cosines when `normalise` ([K, K], float64).
    Each matrix is kept only as a flat float32 vector (flat vectors pass through as they are)."""
    flat = torch.stack([m if m.dim() == 1 else _flat(m, normalise) for m in mats])
    return (flat @ flat.T).double()


def _projection(x: torch.Tensor, basis_only: bool = False) -> torch.Tensor | int:
    """P = QQᵀ for the reduced QR basis Q of the centred features (or, with `basis_only`, Q's column count,
    what mean_squared_cca divides by). Features constant over the n examples are dropped first: they add no
    direction of their own, only an arbitrary basis vector. With at least as many features as examples the
    basis spans all of ℝⁿ (P = I): the degenerate case of the paper's Theorem 1."""
    x = x[:, x.amax(0) > x.amin(0)].double()
    n, p = x.shape
    if basis_only:
        return min(n, p)
    if p >= n:
        return torch.eye(n, dtype=x.dtype)
    q = torch.linalg.qr(x - x.mean(0))[0]
    return q @ q.T


def correspondence_accuracy(sim: torch.Tensor, tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's sanity-check accuracy from S [M, L, M, L] (S[a, i, b, j]: layer i of a vs layer j of b).

    For every ordered pair of different members (a, b) and every layer i of a, a hit is layer i being the most
    similar layer of b. Layers within `tol` of the best (float32 round-off) tie and share the hit: 1/k when i is
    one of k, the expected score of breaking the tie at random. Returns (accuracy, accuracy per layer i [L])."""
    members = sim.shape[0]
    rows = sim.permute(0, 2, 1, 3)  # [a, b, i, j]
    best = rows >= rows.amax(-1, keepdim=True) - tol
    hit = best.diagonal(dim1=2, dim2=3) / best.sum(-1)  # [a, b, i]
    other = ~torch.eye(members, dtype=torch.bool)
    per_layer = hit[other].mean(0)
    return per_layer.mean(), per_layer


def mean_between_members(sim: torch.Tensor) -> torch.Tensor:
    """[L, L]: S[a, i, b, j] averaged over all ordered pairs of different members (the paper's Figure 2)."""
    members = sim.shape[0]
    other = ~torch.eye(members, dtype=torch.bool)
    return sim.permute(0, 2, 1, 3)[other].mean(0)
