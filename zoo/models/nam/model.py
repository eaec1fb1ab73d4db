"""Neural Additive Models (Agarwal et al., NeurIPS 2021, arXiv 2004.13912): the math, as one grouped module.

A NAM predicts  g(E[y]) = β + Σ_k f_k(x_k)  (eq. 1), each shape function f_k a small network of the single input
x_k. The first layer of f_k has `units[k]` hidden units, either
    ExU:   h = ReLU-n(exp(w) · (x − c))      (n = 1; w ~ N(4, 0.5²), c ~ N(0, 0.5²), both truncated at 2σ)
    ReLU:  h = ReLU(w · (x − c))            (w Glorot-uniform, c as above),
then, unless shallow, ReLU layers of 64 and 32 units, and a linear output without bias; dropout follows every
hidden layer. Feature dropout drops whole f_k outputs (inverted scaling) before the sum. The paper's regularisers,
as the official code computes them for each network:
    output penalty  λ₁ · (1/K) Σ_k mean_batch f_k(x_k)²     (outputs without dropout)
    weight decay    λ₂ · (1/K) Σ_θ ‖θ‖² / 2                 (every parameter, bias and centres included).

Everything is batched: an ensemble of E NAMs with K feature nets each is E·K small networks computed together,
never by a Python loop over features or members. Feature nets may differ in width (as in the official code): the
first-layer parameters of all K nets lie side by side in one packed axis of U = Σ_k units[k], where each unit reads
its own feature, x[:, feature_of], so the elementwise first layer costs U per example. A layer that maps each net's
units to its own outputs scatters the packed units into a zero-padded [K, max width] grid (the padding is zeros in
the activations, so it adds nothing and gets no gradient) and applies every net's weight in one batched matmul;
the later layers are [E, K, in, out] tensors applied by one einsum. Members are independent; the ensemble's
prediction averages their logits (still an additive model).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from zoo.nn.dropout import Dropout

Activation = Literal["exu", "relu"]


def _trunc_normal(shape: tuple[int, ...], mean: float, std: float, g: torch.Generator) -> torch.Tensor:
    t = torch.empty(shape)
    return nn.init.trunc_normal_(t, mean, std, mean - 2 * std, mean + 2 * std, generator=g)


def _uniform(shape: tuple[int, ...], fan_in: torch.Tensor, fan_out: int, g: torch.Generator) -> torch.Tensor:
    """Glorot-uniform weights, U(±√(6 / (fan_in + fan_out))), with `fan_in` broadcast over shape[1:] (it may
    differ per feature net)."""
    limit = torch.sqrt(6.0 / (fan_in.double() + fan_out)).float()
    return (torch.rand(shape, generator=g) * 2 - 1) * limit


class NAM(nn.Module):
    """E ensemble members x K feature nets, all computed as grouped tensor operations.

    Args:
        in_features: K, the model inputs (one-hot columns count one each, as in the official code).
        units: first-layer width of each feature net [K] (their units are packed side by side, U = Σ units).
        hidden: the ReLU layers after the first ([64, 32] in the paper's deep feature nets, [] when shallow).
        activation: "exu" (ExU units with ReLU-n) or "relu" (standard units).
        relu_n: the n of ReLU-n for ExU units.
        dropout, feature_dropout: inside each feature net, and on whole feature-net outputs.
        members: E, the ensemble size.
        seed: the initialisation's generator seed.
    """

    def __init__(self, in_features: int, units: list[int], hidden: list[int] = (64, 32),
                 activation: Activation = "exu", relu_n: float = 1.0, dropout: float = 0.5,
                 feature_dropout: float = 0.0, members: int = 1, seed: int = 0):
        super().__init__()
        if len(units) != in_features or min(units) < 1:
            raise ValueError(f"units needs {in_features} positive widths, one per feature; got {list(units)}")
        if activation not in ("exu", "relu"):
            raise ValueError(f"activation must be 'exu' or 'relu', got {activation!r}")
        self.activation, self.relu_n = activation, relu_n
        self.dropout, self.feature_dropout = Dropout(dropout), Dropout(feature_dropout)
        E, K, U = members, in_features, sum(units)
        self.register_buffer("units", torch.as_tensor(list(units), dtype=torch.long))
        feature_of = torch.repeat_interleave(torch.arange(K), self.units)
        self.register_buffer("feature_of", feature_of, persistent=False)  # [U]: the feature each unit reads
        start = torch.cumsum(self.units, 0) - self.units
        slot = feature_of * max(units) + torch.arange(U) - start[feature_of]  # each unit's place in the [K, W] grid
        self.register_buffer("slot", slot, persistent=False)
        self.weight = nn.Parameter(torch.empty(E, U))   # w of the first layer
        self.center = nn.Parameter(torch.empty(E, U))   # c of the first layer
        self.layers = nn.ParameterList()  # [E, U, h0] (packed rows), then [E, K, a, b]
        self.biases = nn.ParameterList()  # [E, K, b]
        for i, b in enumerate(hidden):
            shape = (E, U, b) if i == 0 else (E, K, hidden[i - 1], b)
            self.layers.append(nn.Parameter(torch.empty(shape)))
            self.biases.append(nn.Parameter(torch.empty(E, K, b)))
        self.out = nn.Parameter(torch.empty((E, K, hidden[-1]) if hidden else (E, U)))
        self.bias = nn.Parameter(torch.empty(E))
        self.reset_parameters(seed)

    @property
    def members(self) -> int:
        return self.bias.shape[0]

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """The official initialisers (module docstring), Glorot fans per feature net."""
        g = torch.Generator().manual_seed(seed)
        E, U = self.weight.shape
        per_unit = self.units.cpu()[self.feature_of.cpu()]  # the width of each unit's own feature net
        if self.activation == "exu":
            self.weight.copy_(_trunc_normal((E, U), 4.0, 0.5, g))
        else:  # Glorot-uniform on each feature net's [1, units] kernel
            self.weight.copy_(_uniform((E, U), per_unit, 1, g))
        self.center.copy_(_trunc_normal((E, U), 0.0, 0.5, g))
        fan_in = per_unit[:, None]
        for i, (layer, bias) in enumerate(zip(self.layers, self.biases)):
            b = layer.shape[-1]
            fan = fan_in if i == 0 else torch.tensor(float(layer.shape[-2]))
            layer.copy_(_uniform(tuple(layer.shape), fan, b, g))
            bias.zero_()
        fan = per_unit if not len(self.layers) else torch.tensor(float(self.out.shape[-1]))
        self.out.copy_(_uniform(tuple(self.out.shape), fan, 1, g))
        self.bias.zero_()

    def _grid(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Packed units along `dim` of t scattered into a zero-padded [K, max width] grid there (a reshape when
        every net has the same width: nothing to pad)."""
        K, W = len(self.units), int(self.units.max())
        if K * W == t.shape[dim]:
            return t.unflatten(dim, (K, W))
        shape = list(t.shape)
        shape[dim] = K * W
        grid = t.new_zeros(shape).index_copy(dim, self.slot, t)
        return grid.unflatten(dim, (K, W))

    def hidden_first(self, x: torch.Tensor) -> torch.Tensor:
        """First-layer activations [B, E, U] of inputs x [B, K]."""
        z = x[:, None, self.feature_of] - self.center
        if self.activation == "exu":
            return (self.weight.exp() * z).clamp(0.0, self.relu_n)
        return torch.relu(self.weight * z)

    def feature_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """f_k(x_k) of every member and feature: [B, E, K] (dropout inside the nets when training)."""
        B, E, K = x.shape[0], self.members, len(self.units)
        h = self.dropout(self.hidden_first(x))
        if not len(self.layers):
            hv = h * self.out  # shallow: f_k sums its own units' h · v
            return hv.new_zeros(B, E, K).index_add(2, self.feature_of, hv)
        for i, (layer, bias) in enumerate(zip(self.layers, self.biases)):
            if i == 0:
                z = torch.einsum("bekw,ekwo->beko", self._grid(h, 2), self._grid(layer, 1))
            else:
                z = torch.einsum("beki,ekio->beko", h, layer)
            h = self.dropout(torch.relu(z + bias))
        return torch.einsum("beki,eki->bek", h, self.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (or regression outputs) of every member [B, E]: β + Σ_k f_k(x_k), with feature dropout."""
        return self.feature_dropout(self.feature_outputs(x)).sum(-1) + self.bias

    def output_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """(1/K) Σ_k mean_batch f_k(x_k)² per member [E], on the outputs without dropout (as the official code)."""
        was = self.training
        self.train(False)
        f = self.feature_outputs(x)
        self.train(was)
        return f.pow(2).mean((0, 2))

    def weight_decay(self) -> torch.Tensor:
        """(1/K) Σ_θ ‖θ‖²/2 over each member's parameters [E]."""
        E, K = self.members, len(self.units)
        return sum(p.pow(2).reshape(E, -1).sum(1) for p in self.parameters()) / (2 * K)
