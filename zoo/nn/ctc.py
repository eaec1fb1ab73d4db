"""CTC alignments, shared by the speech papers (Graves et al. 2013, the Imputer): an alignment is one output per
frame over the blank (index 0) and the labels 1..K; it reads as the label sequence left after merging repeats and
dropping blanks (the collapse β of Graves et al. 2006)."""
from __future__ import annotations

import torch


def collapse(alignment: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """β of each alignment [B, T] (its first `lengths[b]` frames): repeats merged, blanks removed. One tensor pass;
    only the split into per-utterance lists loops over the batch."""
    T = alignment.shape[1]
    valid = torch.arange(T, device=alignment.device)[None] < lengths.to(alignment.device)[:, None]
    new = torch.ones_like(valid)
    new[:, 1:] = alignment[:, 1:] != alignment[:, :-1]
    keep = valid & new & (alignment != 0)
    return [row[k].tolist() for row, k in zip(alignment, keep)]


def viterbi_alignment(log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                      target_lengths: torch.Tensor) -> torch.Tensor:
    """The most probable alignment of each target under per-frame log-probabilities [B, T, K+1] (blank = 0): the
    max-product recursion over CTC's lattice of 2U+1 states (blank, y_1, blank, ..., y_U, blank), vectorised over the
    batch and the states, then backtracked. Frames past `lengths[b]` get the blank. Returns [B, T] outputs."""
    B, T, _ = log_probs.shape
    U = targets.shape[1]
    S = 2 * U + 1
    dev = log_probs.device
    labels = torch.zeros(B, S, dtype=torch.long, device=dev)
    labels[:, 1::2] = targets
    s = torch.arange(S, device=dev)
    # the skip s-2 -> s is allowed into a label state whose label differs from the label two states back
    skip = torch.zeros(B, S, dtype=torch.bool, device=dev)
    skip[:, 2:] = (s[2:] % 2 == 1) & (labels[:, 2:] != labels[:, :-2])
    in_lattice = s[None] < 2 * target_lengths.to(dev)[:, None] + 1
    neg = torch.tensor(float("-inf"), device=dev)
    emit = log_probs.gather(2, labels[:, None].expand(B, T, S)).masked_fill(~in_lattice[:, None], neg)  # [B, T, S]
    score = torch.full((B, S), float("-inf"), device=dev)
    score[:, :2] = emit[:, 0, :2]
    back = torch.zeros(B, T, S, dtype=torch.long, device=dev)        # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, T):
        stay = score
        step = torch.cat([score.new_full((B, 1), float("-inf")), score[:, :-1]], 1)
        jump = torch.cat([score.new_full((B, 2), float("-inf")), score[:, :-2]], 1).masked_fill(~skip, neg)
        best, arg = torch.stack([stay, step, jump]).max(0)
        active = (t < lengths.to(dev))[:, None]
        score = torch.where(active, best + emit[:, t], score)
        back[:, t] = torch.where(active, arg, 0)
    last = 2 * target_lengths.to(dev)                                 # the final blank; the last label is last - 1
    final = score.gather(1, torch.stack([last, (last - 1).clamp_min(0)], 1))
    state = torch.where(final[:, 1] > final[:, 0], last - 1, last)
    out = torch.zeros(B, T, dtype=torch.long, device=dev)
    for t in range(T - 1, -1, -1):
        active = t < lengths.to(dev)
        out[:, t] = torch.where(active, labels.gather(1, state[:, None])[:, 0], 0)
        state = torch.where(active, state - back[:, t].gather(1, state[:, None])[:, 0], state)
    return out
