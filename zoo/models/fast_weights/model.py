"""Fast weights (Ba, Hinton, Mnih, Leibo & Ionescu 2016, arXiv 1610.06258) and the recurrent controls of its
associative-retrieval experiment (Table 1): the IRNN (Le, Jaitly & Hinton 2015) and the LSTM.

The paper's fast associative memory (§2), for R hidden units, hidden state h(t) and input x(t):
    A(t) = λ A(t−1) + η h(t) h(t)ᵀ                                             (fast weights, A(0) = 0)
    h_0(t+1) = f(W h(t) + C x(t))                                              (the slow transition)
    h_{s+1}(t+1) = f(LN[W h(t) + C x(t) + A(t) h_s(t+1)]),  s = 0 .. S−1       (the inner loop)
and h(t+1) = h_S(t+1), with f = ReLU and LN layer normalisation over the R hidden units of each example with a
learned gain and bias (Ba, Kiros & Hinton 2016). Normalising over the batch instead (as the widely copied
jiamings/fast-weights port does) makes one example's state depend on the others'; here it never does.

A(t) is never materialised. Unrolling the recursion from A(0) = 0 gives
    A(t) h = η Σ_{τ=1..t} λ^{t−τ} h(τ) (h(τ)ᵀ h),
the paper's reading of the inner loop as attention to the past hidden states in proportion to their scalar product
with the current one, weighted by the decay. With the t past states stacked as H [B, t, R] it is η Hᵀ(d ⊙ H h),
d_τ = λ^{t−τ}: O(tR) per example and inner step instead of O(R²), and backprop keeps no [B, R, R] matrix per time
step. Only the recurrence over time steps is a Python loop (it is sequential); everything else is batched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FastWeightsRNN(nn.Module):
    """The fast-weights ReLU RNN: input [B, T, I] -> hidden states h(1..T) [B, T, R].

    Args:
        input_size, hidden_size: I and R.
        decay, fast_lr, inner_steps: λ, η and S of the paper (0.95, 0.5, 1 in its associative-retrieval runs).
        w_scale: W starts as w_scale · I (0.05, as in the paper's text [unverified] and both TF ports).
    """

    def __init__(self, input_size: int, hidden_size: int, decay: float = 0.95, fast_lr: float = 0.5,
                 inner_steps: int = 1, w_scale: float = 0.05):
        super().__init__()
        if inner_steps < 1:
            raise ValueError(f"inner_steps (S) must be at least 1, got {inner_steps}")
        self.decay, self.fast_lr, self.inner_steps = decay, fast_lr, inner_steps
        self.W = nn.Parameter(w_scale * torch.eye(hidden_size))
        self.C = nn.Linear(input_size, hidden_size, bias=False)
        self.ln = nn.LayerNorm(hidden_size)  # over the units of each example, learned gain and bias

    def scores(self, past: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """How much A(t) h takes from each past state: η λ^{t−τ} h(τ)ᵀh for past [B, t, R], h [B, R] -> [B, t]."""
        t = past.shape[1]
        d = self.fast_lr * self.decay ** torch.arange(t - 1, -1, -1, dtype=h.dtype, device=h.device)
        return torch.einsum("btr,br->bt", past, h) * d

    def attend(self, past: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """A(t) h for the past states h(1..t) stacked as past [B, t, R] and h [B, R]: η Σ_τ λ^{t−τ} h(τ)(h(τ)ᵀh)."""
        return torch.einsum("btr,bt->br", past, self.scores(past, h))

    def recall(self, x: torch.Tensor) -> torch.Tensor:
        """At the last input (the query), the first inner step's scores over the earlier states: [B, T−1].
        Row b says which time steps' hidden states the fast weights bring back to answer sequence b."""
        states = self(x)
        slow = states[:, -2] @ self.W.T + self.C(x[:, -1])
        return self.scores(states[:, :-1], F.relu(slow))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        cx = self.C(x)  # C x(t) for every step at once
        h = cx.new_zeros(B, self.W.shape[0])  # h(0) = 0: it adds nothing to A
        states: list[torch.Tensor] = []  # h(1), ..., h(t): what A(t) holds
        for t in range(T):
            slow = h @ self.W.T + cx[:, t]
            past = torch.stack(states, 1) if states else None
            hs = F.relu(slow)  # h_0(t+1)
            for _ in range(self.inner_steps):
                hs = F.relu(self.ln(slow + (self.attend(past, hs) if past is not None else 0.0)))
            h = hs
            states.append(h)
        return torch.stack(states, 1)


class IRNN(nn.Module):
    """ReLU RNN with the recurrent matrix initialised to the identity and zero biases (Le et al. 2015):
    h(t+1) = ReLU(W h(t) + C x(t) + b). Input [B, T, I] -> hidden states [B, T, R]."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size, nonlinearity="relu", batch_first=True)
        with torch.no_grad():
            self.rnn.weight_hh_l0.copy_(torch.eye(hidden_size))
            self.rnn.bias_hh_l0.zero_()
            self.rnn.bias_ih_l0.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class LSTM(nn.Module):
    """torch.nn.LSTM with R cells, batch first: input [B, T, I] -> hidden states [B, T, R]."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


CELLS = ("fast_weights", "irnn", "lstm")


class RetrievalNet(nn.Module):
    """The associative-retrieval network of §4.1: each symbol becomes a learned embedding, a single recurrent layer
    reads the sequence, and its final hidden state passes through a hidden layer of ReLUs to a softmax over the
    symbols. Tokens [B, T] -> logits [B, num_symbols].

    Args:
        cell: "fast_weights", "irnn" or "lstm".
        num_symbols, embed_dim, hidden_size, readout_hidden: 37 symbols, 100-d embedding, R, 100 ReLUs [unverified].
        decay, fast_lr, inner_steps, w_scale: the fast-weights cell's (ignored by the controls).
    """

    def __init__(self, cell: str = "fast_weights", num_symbols: int = 37, embed_dim: int = 100, hidden_size: int = 20,
                 readout_hidden: int = 100, decay: float = 0.95, fast_lr: float = 0.5, inner_steps: int = 1,
                 w_scale: float = 0.05):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        self.embed = nn.Embedding(num_symbols, embed_dim)
        if cell == "fast_weights":
            self.rnn: nn.Module = FastWeightsRNN(embed_dim, hidden_size, decay, fast_lr, inner_steps, w_scale)
        else:
            self.rnn = (IRNN if cell == "irnn" else LSTM)(embed_dim, hidden_size)
        self.readout = nn.Sequential(nn.Linear(hidden_size, readout_hidden), nn.ReLU(),
                                     nn.Linear(readout_hidden, num_symbols))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.readout(self.rnn(self.embed(tokens))[:, -1])
