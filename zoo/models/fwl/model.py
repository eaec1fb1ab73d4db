"""Fast Weight Layers: "Meta-Learning Fast Weight Language Models" (Clark, Guu, Chang, Pasupat, Hinton & Norouzi,
EMNLP 2022, arXiv 2212.02475), on top of a causal transformer language model.

The FWL block replaces the transformer's output layer: Dense(d -> 4d), squared ReLU, Dense(4d -> d), layer norm,
unembedding (google-research fwl/, the layer-only official code). It runs twice over a window:
1. with its slow weights, giving the next-token cross-entropy L = mean_t CE(softmax(logits_t), y_t) whose gradient
   is written out by hand (no autograd: ∂L/∂logits = (p − onehot(y)) / T, then back through each layer);
2. with fast weights: at position i every weight is the slow weight after one gradient step on the losses of the
   earlier positions j < i only. For a dense layer z = x W + b that step is
       z_i = x_i W + b − η_W Σ_{j<i} (x_i · x_j) g_j − η_b Σ_{j<i} g_j,     g_j = ∂L/∂z_j (slow pass),
   causal linear attention with queries x_i, keys x_j (the slow pass's inputs) and values g_j, computed in chunks
   so that memory stays linear in the window length. The layer norm's gain α and bias β get the same exclusive
   running sums of their gradients; the unembedding stays slow (as in the official code).
The step sizes η are learned scalars (0.01 at the start) and the whole two-pass computation is trained end to end,
so the model meta-learns to use its own gradient updates. The label of position j is the token at j + 1, which is
an input at every later position, so the block needs nothing beyond the tokens themselves.

Where this differs from the official code: ∂L/∂logits is divided by the window's length T, where the official code
divides by the number of target tokens in the whole batch (so its effective step size shrinks with the batch size
and evaluation at another batch size changes the model); and the layer norm has ε = 1e-5 under its square root
(the official layer norm has none).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def causal_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """out_i = Σ_{j<i} (q_i · k_j) v_j for [B, T, dk], [B, T, dk], [B, T, dv] -> [B, T, dv] (strictly causal).

    Mixed-chunk form (Hua et al. 2022, as the official FWL code uses it): within a chunk of `chunk` positions the
    masked quadratic form, across chunks the exclusive running sum of the chunks' kᵀv; memory O(T·chunk + T/chunk·dk·dv)
    instead of O(T²). The window is zero-padded to a whole number of chunks (zero keys and values add nothing).
    """
    B, T, dk = q.shape
    c = max(1, min(chunk, T))
    n = math.ceil(T / c)
    pad = n * c - T
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    q, k, v = (t.reshape(B, n, c, -1) for t in (q, k, v))
    mask = torch.ones(c, c, dtype=torch.bool, device=q.device).tril(-1)
    local = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0) @ v
    kv = k.transpose(-1, -2) @ v                   # [B, n, dk, dv]: each chunk's Σ_j k_jᵀ v_j
    before = kv.cumsum(1) - kv                     # the chunks strictly before
    out = local + q @ before
    return out.reshape(B, n * c, -1)[:, :T]


def exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    """Σ_{j<i} x_j along dim 1."""
    return x.cumsum(1) - x


class FastWeightBlock(nn.Module):
    """The FWL block: d -> 4d (squared ReLU) -> d -> layer norm -> vocabulary logits, with or without fast weights.

    Args:
        d: input width; the hidden layer is 4d as in the official code.
        vocab_size: V.
        fast: apply the fast-weight pass (False gives the same block with slow weights only: the control).
        chunk: positions per chunk of the causal linear attention (the official code uses 16 chunks for 4096
            tokens, i.e. 256).
        step_size: initial value of the learned step sizes η (0.01 in the official code).
        eps: the layer norm's ε.
    """

    def __init__(self, d: int, vocab_size: int, fast: bool = True, chunk: int = 256, step_size: float = 0.01,
                 eps: float = 1e-5):
        super().__init__()
        self.fast, self.chunk, self.eps = fast, chunk, eps
        self.W1 = nn.Parameter(0.05 * torch.randn(d, 4 * d))  # 0.05·N(0, 1) kernels, zero biases (official)
        self.b1 = nn.Parameter(torch.zeros(4 * d))
        self.W2 = nn.Parameter(0.05 * torch.randn(4 * d, d))
        self.b2 = nn.Parameter(torch.zeros(d))
        self.alpha = nn.Parameter(torch.ones(d))
        self.beta = nn.Parameter(torch.zeros(d))
        self.unembed = nn.Linear(d, vocab_size)
        # η for W1, b1, W2, b2, α, β
        self.eta = nn.Parameter(torch.full((6,), float(step_size)))

    def _norm(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z − mean) / σ over features, and σ."""
        s = z - z.mean(-1, keepdim=True)
        sigma = (s.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        return s / sigma, sigma

    def slow(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pass 1, slow weights: every layer's input and output (kept for the hand-written backward)."""
        z1 = x @ self.W1 + self.b1
        a1 = F.relu(z1).square()
        z2 = a1 @ self.W2 + self.b2
        n, sigma = self._norm(z2)
        o = self.alpha * n + self.beta
        return {"x": x, "z1": z1, "a1": a1, "z2": z2, "n": n, "sigma": sigma, "o": o, "logits": self.unembed(o)}

    def gradients(self, s: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """∂L/∂(each layer's output) of L = the window's mean next-token cross-entropy, by hand (the official code's
        `bwd`): softmax-CE, the unembedding, the layer norm, the second dense layer and the squared ReLU."""
        T = labels.shape[1]
        # ∂L/∂logits = (p − onehot(y)) / T; times the unembedding without forming the [B, T, V] difference
        U = self.unembed.weight
        g_o = (F.softmax(s["logits"], -1) @ U - U[labels]) / T
        g_n = g_o * self.alpha
        n = s["n"]
        g_z2 = (g_n - g_n.mean(-1, keepdim=True) - n * (g_n * n).mean(-1, keepdim=True)) / s["sigma"]
        g_a1 = g_z2 @ self.W2.T
        g_z1 = g_a1 * 2 * s["z1"] * (s["z1"] > 0)
        return {"o": g_o, "z2": g_z2, "z1": g_z1}

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, V] for the transformer's output x [B, T, d]; `labels` [B, T] are the next tokens (only
        those of earlier positions reach any output; without labels, or with fast=False, the slow pass alone)."""
        s = self.slow(x)
        if not self.fast or labels is None:
            return s["logits"]
        g = self.gradients(s, labels)
        eta = self.eta
        z1 = (s["z1"] - eta[0] * causal_linear_attention(x, x, g["z1"], self.chunk)
              - eta[1] * exclusive_cumsum(g["z1"]))
        a1 = F.relu(z1).square()
        z2 = (a1 @ self.W2 + self.b2 - eta[2] * causal_linear_attention(a1, s["a1"], g["z2"], self.chunk)
              - eta[3] * exclusive_cumsum(g["z2"]))
        n, _ = self._norm(z2)
        alpha = self.alpha - eta[4] * exclusive_cumsum(g["o"] * s["n"])
        beta = self.beta - eta[5] * exclusive_cumsum(g["o"])
        return self.unembed(alpha * n + beta)


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class TransformerLayer(nn.Module):
    """Pre-norm: x + Attn(LN(x)), then x + MLP(LN(x)) (GELU, 4d hidden), dropout on each branch."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


class FWLTransformer(nn.Module):
    """Token and position embeddings, `layers` causal transformer layers, a final layer norm, then the FWL block
    (fast=False: the same network with slow weights only, the transformer baseline). tokens [B, T] -> logits."""

    def __init__(self, vocab_size: int, d: int = 256, layers: int = 4, heads: int = 4, context: int = 256,
                 dropout: float = 0.1, fast: bool = True, chunk: int = 256, step_size: float = 0.01):
        super().__init__()
        if d % heads:
            raise ValueError(f"d={d} must be a multiple of heads={heads}")
        self.context = context
        self.tok = nn.Embedding(vocab_size, d)
        self.pos = nn.Embedding(context, d)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(TransformerLayer(d, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.fwl = FastWeightBlock(d, vocab_size, fast, chunk, step_size)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]
        if T > self.context:
            raise ValueError(f"a window of {T} tokens is longer than the model's context of {self.context}: use "
                             f"windows of at most {self.context} (--data.init_args.bptt)")
        h = self.drop(self.tok(tokens) + self.pos.weight[:T])
        for layer in self.layers:
            h = layer(h)
        return self.ln_f(h)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, T, V]. The FWL's labels are the tokens themselves shifted by one; the last
        position's label is unknown and is never used (its gradient only reaches later positions)."""
        labels = F.pad(tokens[:, 1:], (0, 1))
        return self.fwl(self.features(tokens), labels)
