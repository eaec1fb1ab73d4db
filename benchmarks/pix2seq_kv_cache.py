"""Pix2seq decoding with the key/value cache against recomputing the prefix: the released detector's decoder (6
layers, 256 wide, vocabulary 3000, 512 positions) samples 500 tokens after the task prompt (100 objects, the
official `max_instances_per_image_test`), attending to the encoding of a 640 x 640 image (20 x 20 = 400 tokens).
Both sample with the same seeds; the tokens must be identical and the logits equal to float32 rounding.

    python benchmarks/pix2seq_kv_cache.py [--batch 1 --tokens 501 --repeats 3 --threads 1]

The uncached decoder runs the whole prefix through every layer for each new token (what a decoder without a cache
does); the image encoding is computed once for both and is not timed. Target: the cache at least 5x faster.
"""
from __future__ import annotations

import argparse

import torch

from _compare import Row, interleaved, print_rows
from zoo.models.pix2seq.model import Pix2Seq
from zoo.models.pix2seq.tokenizer import DETECTION_TASK, sample_token


@torch.no_grad()
def uncached(model: Pix2Seq, memory: torch.Tensor, prompt: torch.Tensor, length: int, top_p: float,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, logits = prompt, []
    for _ in range(length - prompt.shape[1]):
        step = model.decode(tokens, memory)[:, -1]
        logits.append(step)
        tokens = torch.cat([tokens, sample_token(step, 1.0, 0, top_p, generator)[:, None]], 1)
    return tokens[:, prompt.shape[1]:], torch.stack(logits, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=501, help="sequence length with the prompt (official: 501)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Pix2Seq(backbone="resnet18", num_encoder_layers=1).eval()  # the decoder is the released one
    memory = torch.randn(a.batch, 400, 256)
    prompt = torch.full((a.batch, 1), DETECTION_TASK)

    def cached_run():
        return model.generate(None, prompt, a.tokens, top_p=0.4, generator=torch.Generator().manual_seed(1),
                              memory=memory)

    def uncached_run():
        return uncached(model, memory, prompt, a.tokens, 0.4, torch.Generator().manual_seed(1))

    (tc, lc), (tu, lu) = cached_run(), uncached_run()
    same = torch.equal(tc, tu)
    diff = (lc - lu).abs().max().item()
    print(f"batch {a.batch}, {a.tokens} tokens, torch {torch.__version__}, {a.threads} threads: tokens identical: "
          f"{same}; largest logit difference {diff:.2e}")
    if not same:
        raise SystemExit("the cached decoder sampled other tokens than the uncached one")
    t = interleaved({"cached": cached_run, "uncached": uncached_run}, a.repeats, warmup=0)
    print_rows([Row(f"Pix2seq decoding, {a.tokens} tokens (key/value cache)", "recomputing the prefix", "s",
                    t["cached"], t["uncached"], target=5.0)])


if __name__ == "__main__":
    main()
