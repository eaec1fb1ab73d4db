"""RNN-transducer loss, forward and backward: ours (zoo.losses.transducer_loss, the anti-diagonal recursion under
autograd) against torchaudio's `rnnt_loss` (its compiled kernel) on the same logits, in one process, and the memory
each keeps for the backward pass (bytes of the tensors autograd saves).

    pip install --no-deps --target /tmp/torchaudio torchaudio   # any build whose ops load with your torch
    PYTHONPATH=/tmp/torchaudio python benchmarks/transducer.py [--batch 8 --frames 137 --labels 50 --vocab 40
                                                                --repeats 5]

The default sizes are the synthetic-speech transducer recipe's (configs/speech_rnn/synth-transducer-3l128.yaml:
batches of 8, about 137 stacked frames and 50 phones per utterance, 39 phones and the blank). torchaudio is not a
dependency of the zoo: its wheels pin one torch version, so it is imported at run time where it loads.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from _compare import Row, interleaved, print_rows
from zoo.losses import transducer_loss


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for the backward pass while `fn()` builds its graph."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=137)
    p.add_argument("--labels", type=int, default=50)
    p.add_argument("--vocab", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    try:
        from torchaudio.functional import rnnt_loss
    except (ImportError, OSError) as e:
        raise SystemExit(f"torchaudio does not load here ({e}): install a build matching your torch into a folder "
                         "and put it on PYTHONPATH (see --help)") from None
    torch.manual_seed(0)
    B, T, U, V = a.batch, a.frames, a.labels, a.vocab
    logits = torch.randn(B, T, U + 1, V, requires_grad=True)
    y = torch.randint(1, V, (B, U))
    T_b = torch.randint(T // 2, T + 1, (B,)).index_fill(0, torch.tensor([0]), T)
    U_b = torch.randint(U // 2, U + 1, (B,)).index_fill(0, torch.tensor([0]), U)
    ours_loss = transducer_loss(logits, y, T_b, U_b, reduction="sum")
    ref_loss = rnnt_loss(logits, y.int(), T_b.int(), U_b.int(), blank=0, reduction="sum")
    print(f"B {B}, T {T}, U {U}, V {V}, torch {torch.__version__}, {torch.get_num_threads()} threads; loss ours "
          f"{ours_loss.item():.4f}, torchaudio {ref_loss.item():.4f} (difference {abs(ours_loss - ref_loss).item():.2e})")

    def ours():
        transducer_loss(logits, y, T_b, U_b, reduction="sum").backward()

    def theirs():
        rnnt_loss(logits, y.int(), T_b.int(), U_b.int(), blank=0, reduction="sum").backward()

    t = interleaved({"ours": ours, "theirs": theirs}, a.repeats)
    print_rows([Row("transducer loss, forward + backward", "torchaudio rnnt_loss", "ms", [s * 1e3 for s in t["ours"]],
                    [s * 1e3 for s in t["theirs"]])])
    mem_ours = saved_bytes(lambda: transducer_loss(logits, y, T_b, U_b, reduction="sum"))
    mem_ref = saved_bytes(lambda: rnnt_loss(logits, y.int(), T_b.int(), U_b.int(), blank=0, reduction="sum"))
    print(f"saved for backward: ours {mem_ours / 2**20:.1f} MiB, torchaudio {mem_ref / 2**20:.1f} MiB "
          f"(logits {logits.numel() * 4 / 2**20:.1f} MiB); median ms ours {statistics.median(t['ours']) * 1e3:.1f}")


if __name__ == "__main__":
    main()
