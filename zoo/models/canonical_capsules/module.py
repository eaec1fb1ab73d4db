"""Lightning glue for Canonical Capsules: the official training (Adam 1e-3, the six losses at their official weights,
a step with a non-finite gradient skipped as the official loop skips it, the learning rate divided by 10 at the
`milestones` epochs) and the official evaluation (the Chamfer reconstruction error of test clouds in random poses,
in the canonical frame), plus the canonicalisation instability (`instability`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchmetrics

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.metrics import chamfer_distance
from zoo.models.canonical_capsules.model import CanonicalCapsules, Capsules, chamfer_loss, random_poses


@register_model("canonical_capsules")
class CanonicalCapsulesModule(ZooModule):
    """Canonical Capsules (arXiv 2012.04718): self-supervised capsule decomposition and canonicalisation of point
    clouds, trained on pairs of random rigid poses.

    Batches are (clouds [B, N, d], anything). Validation and test pose every cloud at random (seeded by the batch
    index, so every run sees the same poses), canonicalise, reconstruct, and log `chamfer` (the official
    reconstruction error: mean nearest squared distance both ways, summed) and `instability`: the Chamfer distance
    between the canonical clouds of two random poses of the same cloud (0 for a perfectly stable frame; the
    analysis also measures it across two draws of points, against PCA).

    Args:
        d: 2 or 3 (the official `indim`).
        K: capsules (official 10). C: ACNe width (official 128). depth: residual ACN blocks (official 3).
        n_points: points the decoders output, n_points // K per capsule (official 1024).
        bottleneck: the decoders' first width (official 1280). grid_dim: the learnable grid's dimension (10).
        w_*: the loss weights (official: equivariance 5, localisation 1, equilibrium 1e-3, invariance 1,
            canonical 1, reconstruction 1).
        translation: the random poses' translation range per axis (official 0.2).
        lr: Adam's learning rate (official 1e-3); milestones: epochs at which it is divided by 10 (official
            [200, 400] in 3-D, [20, 40] for 2-D planes).
        weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, d: int = 3, K: int = 10, C: int = 128, depth: int = 3, n_points: int = 1024,
                 bottleneck: int = 1280, grid_dim: int = 10, w_equivariance: float = 5.0,
                 w_localisation: float = 1.0, w_equilibrium: float = 1e-3, w_invariance: float = 1.0,
                 w_canonical: float = 1.0, w_reconstruction: float = 1.0, translation: float = 0.2, lr: float = 1e-3,
                 milestones: list[int] = [200, 400], weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.net = CanonicalCapsules(d, K, C, depth, n_points, bottleneck, grid_dim)
        self.scores = torch.nn.ModuleDict({f"{s}_{m}": torchmetrics.MeanMetric()
                                           for s in ("val", "test") for m in ("chamfer", "instability")})
        self.skipped_steps = 0
        self.init_weights_from(weights)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction [B, M, d], canonical cloud [B, N, d]) of clouds x [B, N, d] in any pose."""
        return self.net(x)

    def canonicalise(self, x: torch.Tensor) -> torch.Tensor:
        """Clouds x [B, N, d] moved into the learned canonical frame."""
        return self.net.canonicalise(x)[0]

    def capsules(self, x: torch.Tensor) -> tuple[torch.Tensor, Capsules]:
        """The canonical cloud and its capsules (keypoints in the canonical frame, descriptors)."""
        return self.net.encode(x)

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        loss = self.net.losses(batch[0], hp.w_equivariance, hp.w_localisation, hp.w_equilibrium, hp.w_invariance,
                               hp.w_canonical, hp.w_reconstruction, hp.translation)
        bs = len(batch[0])
        self.log("train/loss", loss.total, prog_bar=True, batch_size=bs)
        for name in ("reconstruction", "equivariance", "localisation", "equilibrium", "invariance", "canonical"):
            self.log(f"train/{name}", getattr(loss, name), batch_size=bs)
        return loss.total

    def on_after_backward(self) -> None:
        """A non-finite gradient (the Procrustes SVD's backward can blow up when two singular values meet) skips the
        step: every gradient is dropped, so Adam neither moves nor updates its moments, as the official loop's
        `_check_nan_gradient`."""
        if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in self.parameters()):
            for p in self.parameters():
                p.grad = None
            self.skipped_steps += 1
            self.log("train/skipped_steps", float(self.skipped_steps))

    def eval_poses(self, x: torch.Tensor, batch_idx: int, view: int) -> torch.Tensor:
        """x in the random poses of evaluation batch `batch_idx` (view 0 or 1), the same in every run."""
        g = torch.Generator().manual_seed(7919 * batch_idx + view)
        R, t = random_poses(len(x), x.shape[-1], self.hparams.translation, g, x.device)
        return (torch.bmm(R, x.transpose(1, 2)) + t).transpose(1, 2)

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x = batch[0]
        y, x_can = self.net(self.eval_poses(x, batch_idx, 0))
        x_can_b = self.canonicalise(self.eval_poses(x, batch_idx, 1))
        self.scores[f"{stage}_chamfer"].update(chamfer_loss(x_can, y, per_cloud=True))
        self.scores[f"{stage}_instability"].update(chamfer_distance(x_can, x_can_b))
        for m in ("chamfer", "instability"):
            self.log(f"{stage}/{m}", self.scores[f"{stage}_{m}"], prog_bar=m == "chamfer", batch_size=len(x))

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, batch_idx, "test")

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(self.hparams.milestones), gamma=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """Unsupervised classification, canonicalisation against PCA, and pictures (analysis.py)."""
        if datamodule is None:
            return {}
        from zoo.models.canonical_capsules.analysis import analyse

        return analyse(self, datamodule, folder)
