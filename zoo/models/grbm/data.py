"""The paper's own data: 2-D Gaussian mixtures. They are generated, in the paper and in its official code
(gmm.py, main.py of lrjconan/GRBM), so this DataModule generates them the same way, seeded."""
from __future__ import annotations

import math
from typing import Literal

import torch

from zoo.data._base import ImageArrays, InMemoryData

WEIGHTS = (0.33, 0.33, 0.34)
MEANS = ((-5.0, -5.0), (5.0, -5.0), (0.0, 5.0))
STDS = {"iso": ((1.0, 1.0), (1.0, 1.0), (1.0, 1.0)),
        "aniso": ((1.25, 0.5), (1.25, 0.5), (0.5, 1.25))}


class GMM2DDataModule(InMemoryData):
    """The 2-D mixtures of the paper's first experiment: three diagonal Gaussians with weights (0.33, 0.33, 0.34)
    at (−5, −5), (5, −5), (0, 5), standard deviations 1 ("iso") or (1.25, 0.5), (1.25, 0.5), (0.5, 1.25)
    ("aniso"); the official configs train on `num_samples` = 1000 draws. Validation and test sets are further
    independent draws of the same mixture (the paper has none; they give held-out log-likelihoods).
    Each split comes from its own generator seeded by (seed, split), so the data never depend on anything else."""

    def __init__(self, kind: Literal["iso", "aniso"] = "iso", num_samples: int = 1000, val_samples: int = 1000,
                 test_samples: int = 1000, batch_size: int = 100, seed: int = 1234):
        super().__init__(batch_size=batch_size, seed=seed)
        if kind not in STDS:
            raise ValueError(f"kind must be one of {sorted(STDS)}, got {kind!r}")
        self.kind = kind
        self.num_samples, self.val_samples, self.test_samples = num_samples, val_samples, test_samples
        self.sizes = {"train": num_samples, "val": val_samples, "test": test_samples}
        self.weights = torch.tensor(WEIGHTS, dtype=torch.float64)
        self.means = torch.tensor(MEANS, dtype=torch.float64)
        self.stds = torch.tensor(STDS[kind], dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws: a component k ~ Categorical(w), then x = mean_k + std_k ⊙ ε."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k] * eps).float(), k

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The mixture's exact log density per row of x [N, 2]."""
        x = x.double()[:, None, :]
        comp = (-0.5 * ((x - self.means) / self.stds).pow(2) - self.stds.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(comp + self.weights.log(), 1)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        for i, split in enumerate(("train", "val", "test")):
            g = torch.Generator().manual_seed(self.seed * 3 + i)
            setattr(self, f"{split}_set", ImageArrays(*self.sample(self.sizes[split], g), scale=1.0))
