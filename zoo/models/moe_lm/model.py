"""The language model of "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer"
(Shazeer, Mirhoseini, Maziarz, Davis, Le, Hinton & Dean 2017, arXiv 1701.06538, §5.1 and Appendix C).

Five layers: a word embedding, an LSTM, a MoE layer, a second LSTM and a softmax. Every layer but the softmax has
the same width d (512 in the paper); each of them has dropout on its output, and the previous layer's output is
added after the dropout (Appendix C):
    x0 = drop(Embed(w))
    x1 = x0 + drop(LSTM1(x0))
    x2 = x1 + drop(σ(MoE(x1)))
    x3 = x2 + drop(LSTM2(x2))
    p(w_next) = Softmax(x3 W_o + b_o)
Appendix C.1 (checked against the paper text, ar5iv HTML of arXiv 1701.06538): "For every layer other than the
softmax, we apply dropout to the layer output [...]. After dropout, the output of the previous layer is added to the
layer output", and "The output of the MoE layer is passed through a sigmoid function before dropout" (σ above;
`moe_sigmoid=False` leaves it out; the zoo's first Brown measurements did, docs/benchmarks.md compares them).
The MoE layer is zoo.nn.MoE (noisy top-k gating, eqs. 3-5; the importance and load losses of Appendix A); each
expert is d -> h (ReLU) -> d without biases (h = 1024 in the paper). With one expert the layer is a dense
feed-forward layer with no gate: the paper's compute-matched "MoE-1-Wide" baseline is one expert with hidden size
k·h (4096 for k = 4 of h = 1024), as many multiply-adds per token as k experts of h.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from zoo.nn.moe import Experts, MoE

State = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class LMOutput(NamedTuple):
    logits: torch.Tensor        # [B, T, V]
    aux_loss: torch.Tensor      # the MoE layer's balancing loss (0 for a dense layer)
    importance: torch.Tensor    # [E] Σ of gate values over the batch's tokens
    load: torch.Tensor          # [E] the smooth load estimator (the count of tokens sent, without noise)
    state: State                # both LSTMs' (h, c), for the next window


class MoELM(nn.Module):
    """embedding -> LSTM -> MoE -> LSTM -> softmax with dropout and residual additions; tokens [B, T] -> logits.

    Args:
        vocab_size: V.
        d: embedding, LSTM and MoE width (512 in the paper).
        num_experts, k: E experts, k per token (the paper's flat layers: E = 4, 32, 256 with k = 4); E = 1 is a
            dense layer (k is then ignored).
        expert_hidden: h, each expert's ReLU hidden layer (1024 in the paper; k·h for the dense baseline).
        dropout: DropProb of Appendix C, on every layer's output but the softmax's.
        w_importance, w_load, noisy: the MoE gate's balancing-loss weights and noise (zoo.nn.MoE).
        moe_sigmoid: pass the MoE (or dense) layer's output through a sigmoid before its dropout (Appendix C.1).
    """

    def __init__(self, vocab_size: int, d: int = 512, num_experts: int = 32, k: int = 4, expert_hidden: int = 1024,
                 dropout: float = 0.25, w_importance: float = 0.1, w_load: float = 0.1, noisy: bool = True,
                 moe_sigmoid: bool = True):
        super().__init__()
        self.moe_sigmoid = moe_sigmoid
        self.embed = nn.Embedding(vocab_size, d)
        self.lstm1 = nn.LSTM(d, d, batch_first=True)
        self.moe = (MoE(d, d, expert_hidden, num_experts, k, w_importance, w_load, noisy) if num_experts > 1
                    else None)
        self.dense = Experts(1, d, expert_hidden, d) if num_experts == 1 else None
        self.lstm2 = nn.LSTM(d, d, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.softmax = nn.Linear(d, vocab_size)

    def mixture(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The MoE (or dense) layer over [B, T, d]: output, balancing loss, importance, load."""
        if self.moe is not None:
            return tuple(self.moe(x))
        B, T, d = x.shape
        y = self.dense(x.reshape(1, B * T, d)).reshape(B, T, -1)
        n = x.new_full((1,), float(B * T))
        return y, x.new_zeros(()), n, n

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> LMOutput:
        s1, s2 = state if state is not None else (None, None)
        x0 = self.drop(self.embed(tokens))
        h1, s1 = self.lstm1(x0, s1)
        x1 = x0 + self.drop(h1)
        m, aux, importance, load = self.mixture(x1)
        x2 = x1 + self.drop(m.sigmoid() if self.moe_sigmoid else m)
        h2, s2 = self.lstm2(x2, s2)
        x3 = x2 + self.drop(h2)
        return LMOutput(self.softmax(x3), aux, importance, load, (s1, s2))
