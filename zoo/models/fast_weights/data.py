"""The paper's own data: the associative-retrieval task of §4.1, generated as the paper generates it.

A sequence lists K key-value pairs, a key being a letter drawn without replacement (keys are distinct within a
sequence) and its value a digit (values may repeat), then "??", then one of the K keys drawn uniformly; the target
is that key's value: "c9k8j3f1??c" -> 9, "j0a5s5z2??a" -> 5 (the paper's examples, K = 4, length 11). Symbols are the
26 letters, the 10 digits and "?" (37). The paper generates 100,000 training, 10,000 validation and 20,000 test
sequences [unverified against the paper text]; each split here comes from its own generator seeded by (seed, split),
so every split is fixed by the seed alone.
"""
from __future__ import annotations

import string

import torch

from zoo.data._base import InMemoryData, Rows

SYMBOLS = string.ascii_lowercase + string.digits + "?"
LETTERS, DIGIT0, QUERY = 26, 26, 36


def associative_retrieval(n: int, num_pairs: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences: tokens [n, 2K + 3] (indices into SYMBOLS) and targets [n] (the queried key's value's index)."""
    if not 1 <= num_pairs <= LETTERS:
        raise ValueError(f"num_pairs must be between 1 and {LETTERS} (distinct letter keys), got {num_pairs}")
    keys = torch.rand(n, LETTERS, generator=generator).argsort(1)[:, :num_pairs]  # distinct letters per sequence
    values = DIGIT0 + torch.randint(0, 10, (n, num_pairs), generator=generator)
    pick = torch.randint(0, num_pairs, (n, 1), generator=generator)
    query = keys.gather(1, pick)
    tokens = torch.cat([torch.stack([keys, values], 2).flatten(1), torch.full((n, 2), QUERY), query], 1)
    return tokens, values.gather(1, pick).squeeze(1)


def decode(tokens: torch.Tensor) -> str:
    """One sequence of token indices as its string ("c9k8j3f1??c")."""
    return "".join(SYMBOLS[i] for i in tokens.tolist())


class AssociativeRetrievalDataModule(InMemoryData):
    """Generated associative-retrieval sequences (the paper's task): K = `num_pairs` key-value pairs, "??", a query.

    Batches are (tokens [B, 2K + 3], targets [B]); targets index the 37 symbols (a digit's index is 26 + digit).
    """

    num_classes = len(SYMBOLS)

    def __init__(self, num_pairs: int = 4, train_size: int = 100_000, val_size: int = 10_000, test_size: int = 20_000,
                 batch_size: int = 128, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.num_pairs, self.train_size, self.val_size, self.test_size = num_pairs, train_size, val_size, test_size

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        for i, split in enumerate(("train", "val", "test")):
            g = torch.Generator().manual_seed(self.seed * 3 + i)
            n = getattr(self, f"{split}_size")
            setattr(self, f"{split}_set", Rows(*associative_retrieval(n, self.num_pairs, g)))
