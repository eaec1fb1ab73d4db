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
its own feature (row feature_of[u] of xᵀ), so the elementwise first layer costs U per example. Activations are laid
out batch last ([E, U, B], then [E, K, units, B]), so that a layer of all E·K nets is one batched matmul of the
weights' transpose with the activations, without copies to reorder them; a layer that maps each net's units to its
own outputs first scatters the packed units into a zero-padded [K, max width] grid (the padding is zeros in the
activations, so it adds nothing and gets no gradient). The ExU layer with its clamp and dropout, and each ReLU with
its dropout, is one autograd node with a hand-written backward that keeps only its output and a mask: on the CPU
these layers are bound by passes over memory, and autograd's chain of elementwise nodes makes about twice as many.
Members are independent; the ensemble's prediction averages their logits (still an additive model).
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
        self._width = max(units)
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
        K, W = len(self.units), self._width
        if K * W == t.shape[dim]:
            return t.unflatten(dim, (K, W))
        shape = list(t.shape)
        shape[dim] = K * W
        grid = t.new_zeros(shape).index_copy(dim, self.slot, t)
        return grid.unflatten(dim, (K, W))

    def _keep(self, dropout: Dropout, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
        """The kept units (1.0, else 0.0: a float mask multiplies faster than a boolean one selects) of one dropout
        layer, batch last, for activations of `shape` (batch last too). The random
        numbers are drawn in the order of the layout the model computed in before (first layer [B, E, U], later
        layers [E, K, B, units]), so a seed gives the masks it gave then and trained results stay the same."""
        if not self.training or dropout.p == 0:
            return None
        first = len(shape) == 3
        order = (shape[-1], *shape[:-1]) if first else (*shape[:-2], shape[-1], shape[-2])
        keep = torch.rand(order, dtype=like.dtype, device=like.device).lt_(1.0 - dropout.p)  # 1.0 kept, 0.0 dropped
        return keep.movedim(0, -1) if first else keep.transpose(-1, -2)

    def _unit_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Each unit's input, batch last: [U, B] (rows of xᵀ)."""
        return x.t().contiguous().index_select(0, self.feature_of)

    def feature_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """f_k(x_k) of every member and feature: [B, E, K] (dropout inside the nets when training). Deep nets return
        a view of [E, K, B] memory, shallow ones [B, E, K] memory: feature dropout's `rand_like` draws in memory
        order, so each keeps the order its masks had before the layers computed batch last."""
        B, E, K = x.shape[0], self.members, len(self.units)
        U = self.weight.shape[1]
        keep = self._keep(self.dropout, (E, U, B), x)
        scale = 1.0 / (1.0 - self.dropout.p) if keep is not None else 1.0
        h = _first_layer(self._unit_inputs(x), self.weight, self.center, self.activation, self.relu_n, keep, scale)
        if not len(self.layers):
            hv = h * self.out[..., None]  # shallow: f_k sums its own units' h · v
            return hv.new_zeros(E, K, B).index_add(1, self.feature_of, hv).movedim(-1, 0).contiguous()
        for i, (layer, bias) in enumerate(zip(self.layers, self.biases)):
            if i == 0:
                h, layer = self._grid(h, 1), self._grid(layer, 1)
            z = torch.matmul(layer.transpose(-1, -2), h).add_(bias[..., None])
            keep = self._keep(self.dropout, z.shape, z)
            h = torch.relu(z) if keep is None else _ReLUDropout.apply(z, keep, scale)
        return torch.matmul(self.out[:, :, None, :], h)[:, :, 0].movedim(-1, 0)

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


def _first_layer(x: torch.Tensor, weight: torch.Tensor, center: torch.Tensor, activation: Activation, relu_n: float,
                 keep: torch.Tensor | None, scale: float) -> torch.Tensor:
    """The first layer of every feature net with its dropout, batch last: unit inputs [U, B] -> [E, U, B]."""
    if activation == "exu":
        return _ExU.apply(x, weight, center, relu_n, keep, scale)
    h = torch.relu(weight[..., None] * (x - center[..., None]))
    return h if keep is None else h * keep * scale


class _ExU(torch.autograd.Function):
    """h = keep · ReLU-n(s · exp(w) · (x − c)) with the dropout scale s folded in (clamped at s·n), as one autograd
    node that keeps h and the mask of units that pass a gradient (kept and 0 < h < s·n): with
    a = exp(w)(x − c), ∂a/∂w = a and ∂a/∂c = −exp(w), so ∂L/∂w = Σ_b g·h and ∂L/∂c = −s·exp(w)·Σ_b g over those units.
    Autograd's chain of sub, mul, clamp and dropout makes about twice as many passes over the [E, U, B] activations;
    the clamp's gradient at exactly 0 or n (measure zero) is taken as 0."""

    @staticmethod
    def forward(ctx, x, weight, center, n, keep, scale):
        e = weight.exp()[..., None]
        es = e * scale
        h = torch.addcmul(-(es * center[..., None]), es, x).clamp_(0.0, n * scale)  # [E, U, B]
        if keep is not None:
            h.mul_(keep)
        passes = (h > 0).logical_and_(h < n * scale).to(h.dtype)
        ctx.save_for_backward(h, e, passes)
        ctx.scale = scale
        return h

    @staticmethod
    def backward(ctx, g):
        h, e, passes = ctx.saved_tensors
        g = g * passes
        grad_x = (g * e).sum(0).mul_(ctx.scale) if ctx.needs_input_grad[0] else None
        grad_w = torch.linalg.vecdot(g, h) if ctx.needs_input_grad[1] else None
        grad_c = g.sum(-1).mul_(-ctx.scale) * e[..., 0] if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_c, None, None, None


class _ReLUDropout(torch.autograd.Function):
    """keep · s · ReLU(z) with one saved mask (s where kept and z > 0, else 0)."""

    @staticmethod
    def forward(ctx, z, keep, scale):
        passes = (z > 0).to(z.dtype).mul_(keep).mul_(scale)  # s where kept and z > 0, else 0
        ctx.save_for_backward(passes)
        return z * passes

    @staticmethod
    def backward(ctx, g):
        (passes,) = ctx.saved_tensors
        return g * passes, None, None
