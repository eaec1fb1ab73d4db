"""The math of Frosst, Papernot & Hinton (2019) around the soft nearest neighbour loss (zoo.losses):
the entangling objective, the per-layer temperature step, entanglement at the best temperature, and the
out-of-distribution count of same-class neighbours."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.losses import soft_nearest_neighbor_loss


def entangling_loss(logits: torch.Tensor, features: list[torch.Tensor], labels: torch.Tensor, alpha: float,
                    temperatures: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CE(logits, y) − α Σ_l SNNL(h_l, y, T_l): α > 0 *maximises* the entanglement of the hidden layers h_l
    (the paper's regulariser; the reference code's factor −10 is α = 10). Returns (loss, SNNL per layer).
    Distances are taken in float32 even under mixed precision."""
    snnl = torch.stack([soft_nearest_neighbor_loss(h.float(), labels, T) for h, T in zip(features, temperatures)])
    return F.cross_entropy(logits, labels) - alpha * snnl.sum(), snnl


def temperature_gradient(features: list[torch.Tensor], labels: torch.Tensor, temperature: float,
                         inv_t: torch.Tensor) -> torch.Tensor:
    """∂ SNNL(h_l, y, T₀/t_l) / ∂ t_l for every layer l (the features are constants here).

    The temperature of each layer is T₀/t_l with t_l a state that descends the layer's SNNL, one step per
    training batch, t_l ← t_l − η ∂SNNL/∂t_l (the reference code's persistent variable): the weights are
    pushed to entangle each hidden layer at the temperature where it looks least entangled."""
    t = inv_t.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        snnl = torch.stack([soft_nearest_neighbor_loss(h.detach().float(), labels, temperature / t[i])
                            for i, h in enumerate(features)])
        (grad,) = torch.autograd.grad(snnl.sum(), t)  # layer l's loss depends on t_l alone
    return grad


def isometric(x: torch.Tensor) -> torch.Tensor:
    """Rows [n, D] -> rows [n, min(n, D)] with the same inner products (so the same distances): R^T of x^T = QR.
    Makes repeated distance computations on wide layers cheap."""
    x = x.flatten(1).float()
    if x.shape[1] <= x.shape[0]:
        return x
    return torch.linalg.qr(x.T.double()).R.T.to(x.dtype)


#: temperatures searched by `entanglement`, as multiples of the median squared distance
SCALES = tuple(10 ** (i / 4) for i in range(-12, 5))


def entanglement(features: torch.Tensor, labels: torch.Tensor, scales: tuple[float, ...] = SCALES) -> torch.Tensor:
    """The paper's entanglement measure: the SNNL at the temperature that minimises it, searched over
    T = scale × (median squared distance), so the search follows each layer's own length scale."""
    x = isometric(features)
    d = torch.cdist(x, x).pow(2)
    median = d[~torch.eye(len(x), dtype=torch.bool, device=x.device)].median().clamp_min(1e-12)
    return torch.stack([soft_nearest_neighbor_loss(x, labels, float(median * s)) for s in scales]).min()


def same_class_neighbours(queries: torch.Tensor, predicted: torch.Tensor, reference: torch.Tensor,
                          reference_labels: torch.Tensor, k: int, chunk: int = 512) -> torch.Tensor:
    """For each query, how many of its k nearest reference points (Euclidean) carry the query's predicted class:
    the paper's outlier signal (data from elsewhere has fewer neighbours of its predicted class). Queries are
    processed in chunks, so the distance matrix is never [Q, R] at once."""
    queries, reference = queries.flatten(1), reference.flatten(1)
    counts = []
    for q, p in zip(queries.split(chunk), predicted.split(chunk)):
        nearest = torch.cdist(q, reference).topk(k, dim=1, largest=False).indices  # [c, k]
        counts.append((reference_labels[nearest] == p[:, None]).sum(1))
    return torch.cat(counts)
