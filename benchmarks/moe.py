"""Sparsely-gated MoE layer speed: zoo.nn.MoE (sort-based dispatch, experts as two batched matrix products) against
davidmrau/mixture-of-experts, the most used PyTorch port (a SparseDispatcher and a Python loop over its experts), on
the same layer, tokens, optimiser (Adam) and device, in one process.

    git clone https://github.com/davidmrau/mixture-of-experts /tmp/ref-moe   # or any copy of it
    python benchmarks/moe.py /tmp/ref-moe [--tokens 2048] [--experts 32] [--k 4] [--repeats 3]

The paper's LM layer sizes: 512 in and out, experts of 1024 hidden units, k = 4. Both sides use noisy top-k gating
in training and add their balancing losses; the port's experts have biases and end in a softmax (its MLP class), so
ours are built with biases too; the softmax is the only work the port does that ours does not. Prints tokens/s of
a training step (forward, balancing loss, backward, Adam step) and of an eval forward, interleaved so that
drifting machine load hits both alike, and the ratios. (The port's load loss compares softmax outputs with logit
thresholds, its issue #32; the amount of work is the same.) Both train with fused Adam. Under each CPU row, the
share of the port's time in matrix products bounds what any implementation of the same products can gain.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

from _compare import Row, ceiling_note, interleaved, print_rows, product_share
from zoo.nn.moe import MoE

REF = "davidmrau/mixture-of-experts"


def load_reference(checkout: Path):
    path = checkout / "moe.py"
    if not path.is_file():
        sys.exit(f"{path} not found: pass the folder of a davidmrau/mixture-of-experts checkout")
    spec = importlib.util.spec_from_file_location("davidmrau_moe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(checkout: Path, repeats: int = 3, tokens: int = 2048, d: int = 512, hidden: int = 1024, experts: int = 32,
         k: int = 4, steps: int = 3, device: str = "cpu") -> list[Row]:
    ref_module = load_reference(Path(checkout))
    torch.manual_seed(0)
    ours = MoE(d, d, hidden, experts, k, w_importance=1e-2, w_load=1e-2, bias=True).to(device)
    theirs = ref_module.MoE(d, d, experts, hidden, noisy_gating=True, k=k).to(device)
    x = torch.randn(tokens, d, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def train(model, call):
        # fused Adam on both sides: the foreach Adam runs 1.5x slower over our two [E, d, h] tensors than over the
        # port's 64 matrices of the same size (600 against 370 ms a step), a cost of the optimiser, not the layer
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)

        def run():
            model.train()
            for _ in range(steps):
                y, aux = call(model, x)
                loss = y.square().mean() + aux
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return run

    def infer(model, call):
        def run():
            model.eval()
            with torch.no_grad():
                for _ in range(steps):
                    call(model, x)
        return run

    def mine(m, v):
        out = m(v)
        return out.y, out.loss

    def port(m, v):
        return m(v, loss_coef=1e-2)

    out = []
    for what, make in (("training step (forward, balancing losses, backward, Adam)", train), ("eval forward", infer)):
        with torch.no_grad():  # the gates start at zero: give both the same non-trivial routing
            g = torch.randn(d, experts, generator=torch.Generator().manual_seed(1)).to(device) * 0.1
            ours.gate.w_gate.copy_(g)
            theirs.w_gate.copy_(g)
        secs = interleaved({"ours": make(ours, mine), "theirs": make(theirs, port)}, repeats, sync=sync)
        rate = {k_: [steps * tokens / s for s in v] for k_, v in secs.items()}
        note = ceiling_note(product_share(make(theirs, port), 1), "the port") if device == "cpu" else ""
        out.append(Row(f"MoE layer {what}: {experts} experts, k = {k}, {d}-{hidden}-{d}, {tokens} tokens", REF,
                       "tokens/s", rate["ours"], rate["theirs"], higher_is_better=True, target=1.5, note=note))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", type=Path, help="folder of a davidmrau/mixture-of-experts checkout")
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--experts", type=int, default=32)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    print_rows(rows(a.reference, a.repeats, a.tokens, experts=a.experts, k=a.k, device=a.device))


if __name__ == "__main__":
    main()
