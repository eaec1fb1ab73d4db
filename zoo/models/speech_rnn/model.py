"""Speech Recognition with Deep Recurrent Neural Networks (Graves, Mohamed & Hinton, ICASSP 2013, arXiv 1303.5778).

Deep bidirectional LSTM: N stacked layers, each a forward and a backward LSTM over the frames, the next layer reading
both directions' outputs concatenated (§2, eqs. 11-12). Two output layers:
* CTC (§2.1): a softmax over the K phones and the blank at every frame, y_t = W→ h→_t + W← h←_t + b (one linear map of
  the concatenated top-layer outputs); trained with F.ctc_loss and decoded by best path (the most probable output at
  each frame, repeats merged, blanks dropped) or by prefix beam search (ctc_beam_search).
* RNN transducer (§2.3): the same network as the transcription network, l_t; a prediction network, an LSTM over the
  previous phones (one-hot in; before the first phone a vector of zeros, Graves 2012 §2.2), p_u; the two combined by a
  feed-forward output network, h(t, u) = tanh(W_lh l_t + W_pb p_u + b_h), y(t, u) = W_hy h(t, u) + b_y, softmaxed over
  the K phones and the blank; trained with zoo.losses.transducer_loss and decoded greedily or by beam search.
  (That l_t and p_u are hidden activations, and the sizes of W_lh and W_pb, are the paper as remembered:
  unverified.)
The blank is index 0 throughout, phones 1..K.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from zoo.nn.ctc import collapse


def stack_frames(x: torch.Tensor, lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every k consecutive frames [B, T, F] concatenated into one [B, ceil(T/k), k·F] (the last group zero-padded),
    and the new lengths: a lower frame rate, k times less recurrent computation (not in the paper; the CPU recipes'
    choice, k = 1 is the paper's 10 ms frames)."""
    if k == 1:
        return x, lengths
    b, t, f = x.shape
    x = F.pad(x, (0, 0, 0, -t % k))
    return x.reshape(b, -1, k * f), torch.div(lengths + k - 1, k, rounding_mode="floor")


class DeepBLSTM(nn.Module):
    """N stacked (bi)directional LSTM layers over padded frames [B, T, F] with their lengths; packed, so no compute
    goes to the padding. Output [B, T, directions·hidden]."""

    def __init__(self, in_features: int, hidden: int = 250, layers: int = 3, bidirectional: bool = True):
        super().__init__()
        self.out_features = hidden * (2 if bidirectional else 1)
        self.lstm = nn.LSTM(in_features, hidden, layers, batch_first=True, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


class CTCNet(nn.Module):
    """Deep BLSTM + the CTC output layer: frames -> log-probabilities [B, T, K+1] (blank = 0)."""

    def __init__(self, in_features: int, num_phones: int, hidden: int = 250, layers: int = 3,
                 bidirectional: bool = True):
        super().__init__()
        self.encoder = DeepBLSTM(in_features, hidden, layers, bidirectional)
        self.output = nn.Linear(self.encoder.out_features, num_phones + 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.output(self.encoder(x, lengths)).log_softmax(-1)

    def loss(self, log_probs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
        """CTC negative log-likelihood per utterance, averaged over the batch."""
        return F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths, blank=0, reduction="sum",
                          zero_infinity=True) / log_probs.shape[0]


def best_path(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """CTC best-path decoding: the arg-max output per frame, repeats merged, blanks removed."""
    return collapse(log_probs.argmax(-1), lengths)


class Transducer(nn.Module):
    """The RNN transducer of §2.3: transcription network (a deep BLSTM), prediction network (an LSTM over the
    previous phones) and the output network joining them; logits [B, T, U+1, K+1] for the loss.

    Args:
        in_features, num_phones, hidden, layers, bidirectional: the transcription network (as CTCNet).
        pred_hidden, pred_layers: the prediction network's LSTM.
        joint: units of the output network's tanh layer.
    """

    def __init__(self, in_features: int, num_phones: int, hidden: int = 250, layers: int = 3,
                 bidirectional: bool = True, pred_hidden: int = 250, pred_layers: int = 1, joint: int = 250):
        super().__init__()
        K = num_phones
        self.encoder = DeepBLSTM(in_features, hidden, layers, bidirectional)
        self.num_phones = K
        self.prediction = nn.LSTM(K, pred_hidden, pred_layers, batch_first=True)
        self.W_lh = nn.Linear(self.encoder.out_features, joint)
        self.W_pb = nn.Linear(pred_hidden, joint, bias=False)
        self.output = nn.Linear(joint, K + 1)      # W_hy and b_y of the paper, named as CTCNet's

    def transcribe(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """W_lh l_t + b_h for every frame, [B, T, joint]."""
        return self.W_lh(self.encoder(x, lengths))

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """Phones 1..K as one-hot vectors of length K; 0 (no phone yet) as zeros."""
        return F.one_hot(labels.long(), self.num_phones + 1)[..., 1:].float()

    def predict(self, labels: torch.Tensor, state=None):
        """W_pb p_u for "no phone yet" followed by `labels` [B, U]: [B, U+1, joint] and the LSTM state."""
        start = labels.new_zeros(labels.shape[0], 1)
        p, state = self.prediction(self.one_hot(torch.cat([start, labels], 1)), state)
        return self.W_pb(p), state

    def joint(self, l: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """y(t, u) = W_hy tanh(l_t + p_u) for l [..., T, J] and p [..., U+1, J] -> [..., T, U+1, K+1]."""
        return self.output(torch.tanh(l.unsqueeze(-2) + p.unsqueeze(-3)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        l = self.transcribe(x, lengths)
        p, _ = self.predict(labels)
        return self.joint(l, p)

    @torch.no_grad()
    def greedy(self, x: torch.Tensor, lengths: torch.Tensor, max_symbols: int = 5) -> list[list[int]]:
        """Greedy decoding, batched: at each frame emit the most probable phone and stay on the frame (at most
        `max_symbols` per frame), or take the blank and move on. The prediction network advances one step only
        for the utterances that emitted."""
        l = self.transcribe(x, lengths)
        B, T, _ = l.shape
        p, state = self.prediction(l.new_zeros(B, 1, self.num_phones))
        p = self.W_pb(p[:, 0])
        out: list[list[int]] = [[] for _ in range(B)]
        for t in range(T):
            active = t < lengths.to(l.device)
            for _ in range(max_symbols):
                k = self.output(torch.tanh(l[:, t] + p)).argmax(-1)
                emit = active & (k != 0)
                if not emit.any():
                    break
                q, new = self.prediction(self.one_hot(k[:, None]), state)
                p = torch.where(emit[:, None], self.W_pb(q[:, 0]), p)
                state = tuple(torch.where(emit[None, :, None], n, s) for n, s in zip(new, state))
                for b in emit.nonzero().flatten().tolist():
                    out[b].append(int(k[b]))
        return out

    @torch.no_grad()
    def beam_search(self, x: torch.Tensor, length: int, beam: int = 16, normalise_length: bool = True) -> list[int]:
        """Beam search for one utterance x [T, F] (or [1, T, F]) after Graves (2012, §2.5, Algorithm 1): at each frame
        the most probable hypothesis of A (those reaching the frame) is moved to B by a blank, or extended by its
        `beam` most probable phones (Algorithm 1 extends by every phone; with an untrained, near-uniform network
        that floods A) back into A, until B holds `beam` hypotheses more probable than any left in A; B's best
        `beam` go on to the next frame. Where two paths reach the same hypothesis their probabilities add.
        Unlike Algorithm 1 as printed there is no separate pass adding each hypothesis' prefixes' probability to
        it: popping a prefix already extends it into the longer hypotheses, so that pass would count those paths
        twice; with a wide enough beam the search then returns the most probable phone sequence (tested against
        enumeration). The prediction network runs once per prefix. Returns the best final hypothesis by
        log P(y) / |y| (Graves' choice) or, normalise_length=False, by log P(y)."""
        x = x.reshape(1, -1, x.shape[-1])[:, :length]
        l = self.transcribe(x, torch.tensor([length]))[0]
        cache: dict[tuple[int, ...], tuple[torch.Tensor, tuple]] = {}

        def prediction(y: tuple[int, ...]) -> tuple[torch.Tensor, tuple]:
            if y not in cache:
                if y:
                    _, state = prediction(y[:-1])
                    out, state = self.prediction(self.one_hot(torch.tensor([[y[-1]]])), state)
                else:
                    out, state = self.prediction(l.new_zeros(1, 1, self.num_phones))
                cache[y] = (self.W_pb(out[0, 0]), state)
            return cache[y]

        def log_probs(y: tuple[int, ...], t: int) -> list[float]:
            return self.output(torch.tanh(l[t] + prediction(y)[0])).log_softmax(-1).tolist()

        B: dict[tuple[int, ...], float] = {(): 0.0}
        for t in range(length):
            A, B = dict(B), {}
            while A:
                best = max(A, key=A.get)
                if len(B) >= beam and sorted(B.values(), reverse=True)[beam - 1] >= A[best]:
                    break
                p = A.pop(best)
                lp = log_probs(best, t)
                B[best] = _lse(B.get(best, float("-inf")), p + lp[0])
                for k in sorted(range(1, len(lp)), key=lp.__getitem__)[-beam:]:
                    A[best + (k,)] = _lse(A.get(best + (k,), float("-inf")), p + lp[k])
            B = dict(sorted(B.items(), key=lambda kv: -kv[1])[:beam])
        score = (lambda kv: kv[1] / max(len(kv[0]), 1)) if normalise_length else (lambda kv: kv[1])
        return list(max(B.items(), key=score)[0])


def ctc_beam_search(log_probs: torch.Tensor, length: int, beam: int = 16) -> list[int]:
    """CTC prefix beam search for one utterance (log_probs [T, K+1], blank 0): each kept prefix carries the
    log-probabilities of its alignments ending in a blank and in its last label; at each frame every prefix is
    extended by the blank, by its own last label (merged) and by every other label, then the `beam` most probable
    prefixes are kept. Returns the most probable prefix. Exact over all alignments when `beam` covers every prefix."""
    neg = float("-inf")
    lp = log_probs[:length].double()
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, neg)}      # prefix -> (ends in blank, in label)
    for t in range(length):
        row = lp[t].tolist()
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix, blank, label):
            b, n = nxt.setdefault(prefix, [neg, neg])
            nxt[prefix] = [_lse(b, blank), _lse(n, label)]

        for prefix, (b, n) in beams.items():
            total = _lse(b, n)
            add(prefix, total + row[0], neg)                                  # a blank: the prefix stays
            last = prefix[-1] if prefix else None
            if last is not None:
                add(prefix, neg, n + row[last])                               # the last label repeated: merged
            for k in range(1, len(row)):
                # a new label; after its own repeat only through a blank in between
                add(prefix + (k,), neg, (b if k == last else total) + row[k])
        beams = dict(sorted(((p, (v[0], v[1])) for p, v in nxt.items()), key=lambda kv: -_lse(*kv[1]))[:beam])
    return list(max(beams.items(), key=lambda kv: _lse(*kv[1]))[0])


def _lse(a: float, b: float) -> float:
    if a == float("-inf"):
        return b
    if b == float("-inf"):
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))
