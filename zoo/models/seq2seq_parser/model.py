"""Grammar as a Foreign Language (Vinyals, Kaiser, Koo, Petrov, Sutskever & Hinton, NIPS 2015, arXiv 1412.7449).

A sequence-to-sequence LSTM that reads a sentence (reversed, as the paper feeds it) and writes its linearised tree
(zoo.data.parsing.linearise). Separate encoder and decoder LSTMs of the same width; the decoder starts from the
encoder's final states. With attention (§2.1), at each output step t over the encoder's states h_1..h_S:

    u_i^t = vᵀ tanh(W1′ h_i + W2′ d_t),   a^t = softmax(u^t),   d′_t = Σ_i a_i^t h_i,

and [d_t; d′_t] predicts the next token; the paper says that concatenation is also "fed to the next time step",
which is read here as d′_t joining the next step's input (input feeding), so the decoder runs one step at a time.
Without attention (the paper's baseline) only d_t predicts, and nothing is fed back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first `lengths[b]` entries reversed, the padding left in place: [B, S]."""
    S = x.shape[1]
    pos = torch.arange(S, device=x.device)[None]
    n = lengths.to(x.device)[:, None]
    return x.gather(1, torch.where(pos < n, n - 1 - pos, pos))


class Seq2SeqParser(nn.Module):
    """Word ids -> scores of the linearised tree's tokens.

    Args:
        src_vocab, tgt_vocab: the word and tree-token vocabulary sizes (target id 0 is padding, 1 the end, which also
            starts decoding).
        d: LSTM width (the paper: 256), embed: embedding width, layers: LSTM layers (the paper: 3).
        dropout: between LSTM layers (the paper's +D models).
        attention: the paper's LSTM+A; False is its plain LSTM baseline.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, d: int = 256, embed: int = 256, layers: int = 3,
                 dropout: float = 0.2, attention: bool = True):
        super().__init__()
        self.attention, self.layers, self.d = attention, layers, d
        self.src_embed = nn.Embedding(src_vocab, embed)
        self.tgt_embed = nn.Embedding(tgt_vocab, embed)
        self.encoder = nn.LSTM(embed, d, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.cells = nn.ModuleList(nn.LSTMCell((embed + (d if attention else 0)) if i == 0 else d, d)
                                   for i in range(layers))
        self.drop = nn.Dropout(dropout)
        if attention:
            self.W1 = nn.Linear(d, d, bias=False)
            self.W2 = nn.Linear(d, d, bias=False)
            self.v = nn.Linear(d, 1, bias=False)
        self.output = nn.Linear(2 * d if attention else d, tgt_vocab)

    def encode(self, src: torch.Tensor, lengths: torch.Tensor):
        """Encoder states [B, S, d] of the reversed sentence, their mask, W1′h (precomputed once) and the
        decoder's starting state."""
        x = self.src_embed(reverse_within(src, lengths))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, c) = self.encoder(packed)
        H = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])[0]
        mask = torch.arange(src.shape[1], device=src.device)[None] < lengths.to(src.device)[:, None]
        keys = self.W1(H) if self.attention else None
        state = [(h[i], c[i]) for i in range(self.layers)]
        feed = H.new_zeros(src.shape[0], self.d) if self.attention else None
        return H, mask, keys, state, feed

    def step(self, y_prev: torch.Tensor, state, feed, H, mask, keys):
        """One decoder step from the previous tokens [B]: scores [B, V], the new state and the attention readout."""
        x = self.tgt_embed(y_prev)
        if self.attention:
            x = torch.cat([x, feed], -1)
        new = []
        for i, cell in enumerate(self.cells):
            h, c = cell(x, state[i])
            new.append((h, c))
            x = self.drop(h)
        d_t = x
        if self.attention:
            u = self.v(torch.tanh(keys + self.W2(d_t)[:, None]))[..., 0].masked_fill(~mask, float("-inf"))
            a = u.softmax(-1)
            feed = torch.einsum("bs,bsd->bd", a, H)
            d_t = torch.cat([d_t, feed], -1)
        return self.output(d_t), new, feed

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced scores [B, T, V] of the next token after each of `tgt_in` [B, T]."""
        H, mask, keys, state, feed = self.encode(src, lengths)
        if not self.attention:    # nothing fed back: the whole decoder in one call of the cells' LSTM
            return self._unrolled(tgt_in, state)
        out = []
        for t in range(tgt_in.shape[1]):
            logits, state, feed = self.step(tgt_in[:, t], state, feed, H, mask, keys)
            out.append(logits)
        return torch.stack(out, 1)

    def _unrolled(self, tgt_in: torch.Tensor, state) -> torch.Tensor:
        """The attention-free decoder over all steps at once: the cells' weights as one multi-layer LSTM."""
        lstm = self.__dict__.get("_shell")           # a weightless frame for functional_call, not a submodule
        if lstm is None:
            lstm = self.__dict__["_shell"] = nn.LSTM(self.tgt_embed.embedding_dim, self.d, self.layers,
                                                     batch_first=True, dropout=self.drop.p if self.layers > 1 else 0.0,
                                                     device="meta")
        lstm.train(self.training)
        weights = {}
        for i, cell in enumerate(self.cells):
            weights.update({f"weight_ih_l{i}": cell.weight_ih, f"weight_hh_l{i}": cell.weight_hh,
                            f"bias_ih_l{i}": cell.bias_ih, f"bias_hh_l{i}": cell.bias_hh})
        h0 = torch.stack([h for h, _ in state])
        c0 = torch.stack([c for _, c in state])
        out, _ = torch.func.functional_call(lstm, weights, (self.tgt_embed(tgt_in), (h0, c0)))
        return self.output(self.drop(out))

    @torch.no_grad()
    def greedy(self, src: torch.Tensor, lengths: torch.Tensor, max_len: int) -> list[list[int]]:
        """The most probable token at each step until the end token, for the whole batch at once."""
        H, mask, keys, state, feed = self.encode(src, lengths)
        B = src.shape[0]
        y = torch.ones(B, dtype=torch.long, device=src.device)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        out = []
        for _ in range(max_len):
            logits, state, feed = self.step(y, state, feed, H, mask, keys)
            y = logits.argmax(-1)
            out.append(y)
            done |= y == 1
            if done.all():
                break
        seqs = torch.stack(out, 1).tolist()
        return [s[: s.index(1)] if 1 in s else s for s in seqs]

    @torch.no_grad()
    def beam_search(self, src: torch.Tensor, length: int, beam: int, max_len: int) -> list[int]:
        """The most probable token sequence of one sentence ([S] ids) by beam search: `beam` hypotheses advanced as
        one batch, each keeping its own decoder state; finished hypotheses leave the beam."""
        H, mask, keys, state, feed = self.encode(src[None, :length], torch.tensor([length]))
        y = torch.ones(1, dtype=torch.long, device=src.device)
        scores = torch.zeros(1, device=src.device)
        seqs: list[list[int]] = [[]]
        finished: list[tuple[float, list[int]]] = []
        for _ in range(max_len):
            n = y.shape[0]
            logits, state, feed = self.step(y, state, feed, H.expand(n, -1, -1), mask.expand(n, -1),
                                            keys.expand(n, -1, -1) if keys is not None else None)
            total = (scores[:, None] + logits.log_softmax(-1)).flatten()
            top = total.topk(min(beam, total.numel()))
            rows, toks = top.indices // logits.shape[1], top.indices % logits.shape[1]
            keep = []
            for s, r, t in zip(top.values.tolist(), rows.tolist(), toks.tolist()):
                if t == 1:
                    finished.append((s, seqs[r]))
                else:
                    keep.append((s, r, t))
            if not keep or (len(finished) >= beam and max(f[0] for f in finished) >= keep[0][0]):
                break
            idx = torch.tensor([r for _, r, _ in keep], device=src.device)
            state = [(h[idx], c[idx]) for h, c in state]
            feed = feed[idx] if feed is not None else None
            seqs = [seqs[r] + [t] for _, r, t in keep]
            scores = torch.tensor([s for s, _, _ in keep], device=src.device)
            y = torch.tensor([t for _, _, t in keep], device=src.device)
        if not finished:
            finished = [(float(s), q) for s, q in zip(scores.tolist(), seqs)]
        return max(finished, key=lambda f: f[0])[1]


def sequence_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the target tokens [B, T] (0 = padding, ignored), summed over each sentence and averaged
    over the batch."""
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=0, reduction="sum") / target.shape[0]
