"""Lightning glue for GLOM, trained in one of the two ways its papers use.

- `objective: classify`, the supervised training of Culp, Sabour & Hinton 2022 (arXiv 2211.16564): a linear read-out
  of the top level in every occupied column names the object there. The read-out is scored at every step t = 0..T
  (the cross-entropies averaged), so the one read-out is valid throughout the settling and the accuracy at t = 0,
  columns on their own, can be compared with the accuracy after T steps of attention (our choice: their loss
  placement could not be read here). Batches: (images, labels [B, N] with -1 for empty columns, ...).
- `objective: denoise`, the training the GLOM paper proposes: a fraction of the patches is blanked, the columns
  settle for T steps and a decoder reading level 1 and the location fills in the blanked patches (squared error on
  those patches at step T, back-propagated through time, as BERT or a masked autoencoder); plus, at the upper
  levels, a contrastive term that pulls two random columns of one image together and away from the other images'
  columns (NT-Xent, zoo.losses), the paper's way of encouraging large islands of agreement high up without
  collapsing every image to one vector. Batches: (images, anything).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.losses import nt_xent
from zoo.models.glom.model import GLOM, patchify


@register_model("glom")
class GLOMModule(ZooModule):
    """GLOM (arXiv 2102.12627) on images cut into patch x patch columns.

    Args:
        image_size, in_chans, patch: the images (square) and the column patches (image_size a multiple of patch).
        levels, dim, hidden, freqs, radii, beta, weights: the GLOM net (model.GLOM).
        iterations: T, the settling steps in training and evaluation.
        objective: "classify" (per-column labels) or "denoise" (masked patches, contrastive upper levels).
        num_classes: the read-out's classes (classify).
        mask_ratio: the fraction of patches blanked (denoise).
        w_contrast, contrast_from, temperature: the contrastive term's weight, the first level it applies to
            (1-based; that level and all above), and its NT-Xent temperature (denoise).
        lr, weight_decay: AdamW's.
        weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, image_size: int = 48, in_chans: int = 1, patch: int = 6, levels: int = 3, dim: int = 64,
                 hidden: int = 256, freqs: int = 4, radii: list[int | None] | None = None,
                 beta: list[float] | None = None, weights_of_terms: list[float] = [1.0, 1.0, 1.0, 1.0],
                 iterations: int = 6, objective: str = "classify", num_classes: int = 5, mask_ratio: float = 0.5,
                 w_contrast: float = 0.1, contrast_from: int = 2, temperature: float = 0.1, lr: float = 1e-3,
                 weight_decay: float = 0.0, weights: str | None = None):
        super().__init__()
        if objective not in ("classify", "denoise"):
            raise ValueError(f"objective is 'classify' or 'denoise', not {objective!r}")
        if not 1 <= contrast_from <= levels:
            raise ValueError(f"contrast_from is a level between 1 and {levels}, got {contrast_from}")
        self.save_hyperparameters(ignore=["weights"])
        g = image_size // patch
        self.net = GLOM(in_chans * patch * patch, (g, g), levels, dim, hidden, freqs, radii, beta,
                        tuple(weights_of_terms))
        if objective == "classify":
            self.head = nn.Linear(dim, num_classes)
            self.acc = nn.ModuleDict({s: torchmetrics.Accuracy("multiclass", num_classes=num_classes,
                                                               ignore_index=-1) for s in ("val", "test")})
            self.acc_t0 = torchmetrics.Accuracy("multiclass", num_classes=num_classes, ignore_index=-1)
        else:
            self.decoder = nn.Sequential(nn.Linear(dim + self.net.location.shape[1], hidden), nn.ReLU(),
                                         nn.Linear(hidden, in_chans * patch * patch))
            self.mse = nn.ModuleDict({s: torchmetrics.MeanMetric() for s in ("val", "test")})
        self.init_weights_from(weights)

    def settle(self, images: torch.Tensor, iterations: int | None = None) -> list[torch.Tensor]:
        """The states [L, B, N, d] at t = 0..T."""
        T = self.hparams.iterations if iterations is None else iterations
        return self.net(patchify(images, self.hparams.patch), T)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Classify: class scores [B, N, classes] per column after T steps; denoise: the patches decoded from level 1
        [B, N, C·patch²]."""
        x = self.settle(images)[-1]
        return self.head(x[-1]) if self.hparams.objective == "classify" else self.decode(x)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        B, N = x.shape[1:3]
        return self.decoder(torch.cat([x[0], self.net.location.expand(B, N, -1)], -1))

    # ---- classify ----

    def classify_loss(self, states: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([self.head(x[-1]) for x in states])  # [T+1, B, N, classes]
        return F.cross_entropy(logits.flatten(0, 2), labels.repeat(len(states), 1).flatten(), ignore_index=-1)

    # ---- denoise ----

    def blank(self, images: torch.Tensor, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches [B, N, P] with a random `mask_ratio` of each image's columns set to zero, and that mask [B, N]."""
        p = patchify(images, self.hparams.patch)
        B, N = p.shape[:2]
        k = int(round(self.hparams.mask_ratio * N))
        order = torch.rand(B, N, generator=generator, device=p.device if generator is None else "cpu").argsort(1)
        mask = torch.zeros(B, N, dtype=torch.bool).scatter_(1, order[:, :k].cpu(), True).to(p.device)
        return p.masked_fill(mask[..., None], 0.0), mask

    def denoise_loss(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, reconstruction, contrastive)."""
        hp = self.hparams
        blanked, mask = self.blank(images)
        states = self.net(blanked, hp.iterations)
        x = states[-1]
        target = patchify(images, hp.patch)
        err = (self.decode(x) - target).square().mean(-1)
        recon = (err * mask).sum() / mask.sum().clamp(min=1)
        B, N = mask.shape
        pick = torch.rand(B, N, device=images.device).argsort(1)[:, :2]  # two different columns per image
        upper = x[hp.contrast_from - 1:]  # [L', B, N, d]
        rows = torch.arange(B, device=images.device)
        contrast = sum(nt_xent(z[rows, pick[:, 0]], z[rows, pick[:, 1]], hp.temperature) for z in upper) / len(upper)
        return recon + hp.w_contrast * contrast, recon, contrast

    # ---- steps ----

    def training_step(self, batch, batch_idx):
        images = batch[0]
        if self.hparams.objective == "classify":
            loss = self.classify_loss(self.settle(images), batch[1])
        else:
            loss, recon, contrast = self.denoise_loss(images)
            self.log("train/reconstruction", recon, batch_size=len(images))
            self.log("train/contrast", contrast, batch_size=len(images))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def evaluate(self, batch, stage: str) -> None:
        images = batch[0]
        if self.hparams.objective == "classify":
            labels = batch[1]
            states = self.settle(images)
            self.acc[stage](self.head(states[-1][-1]).argmax(-1), labels)
            self.log(f"{stage}/acc", self.acc[stage], prog_bar=True, batch_size=len(images))
            self.log(f"{stage}/loss", self.classify_loss(states, labels), sync_dist=True, batch_size=len(images))
            if stage == "test":
                self.acc_t0(self.head(states[0][-1]).argmax(-1), labels)
                self.log("test/acc_t0", self.acc_t0, batch_size=len(images))
        else:
            g = torch.Generator().manual_seed(1234)  # the same blanked patches every evaluation
            blanked, mask = self.blank(images, g)
            err = (self.decode(self.net(blanked, self.hparams.iterations)[-1])
                   - patchify(images, self.hparams.patch)).square().mean(-1)
            self.mse[stage].update((err * mask).sum() / mask.sum(), weight=mask.sum())
            self.log(f"{stage}/masked_mse", self.mse[stage], prog_bar=True, batch_size=len(images))

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """Accuracy and island scores at every step, robustness to noise and to unseen poses, island pictures
        (analysis.py)."""
        if datamodule is None:
            return {}
        from zoo.models.glom.analysis import analyse

        return analyse(self, datamodule, folder)
