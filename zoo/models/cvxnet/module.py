"""Lightning glue for CvxNet: the official training (Adam 1e-4, gradient norm clipped at 5 through the Trainer,
the five losses of model.py at their official weights) and the evaluation (IoU of the 0.5 level set against the
true occupancy, per shape, averaged over shapes, as the official `compute_loss` in eval mode)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchmetrics

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.metrics import occupancy_iou
from zoo.models.cvxnet.model import CvxNet, Occupancy, cvxnet_losses


@register_model("cvxnet")
class CvxNetModule(ZooModule):
    """CvxNet (arXiv 1909.05736): a shape auto-encoder to a union of K smooth convexes of H half-spaces each.

    Batches are (images [B, C, h, w], points [B, N, dims], occupancy [B, N], anything): during training the first
    `n_box` points are the uniform box samples and the rest near-surface ones (the approximation loss weighs them
    1 and 0.1); in validation and test every point counts alike for the IoU.

    Args:
        dims: 2 or 3 (the query points' dimension).
        K, H: convexes, half-spaces per convex (official: 50 and 25; 50 half-spaces for depth input).
        latent: the code between encoder and decoder (official: 256).
        in_chans: image channels (1 for silhouettes, 3 for RGB, 20 for the official depth stack).
        sigma: the indicator's sharpness σ (official: 75).
        hidden: the decoder's dense widths (official: 1024, 1024, 2048).
        n_box: how many of each training batch's points are box samples (the DataModule's `box_points`).
        w_decomposition, w_unique, w_guidance, w_localisation, w_surface: the loss weights (official: 0.1, 0.001,
            0.01, 1 and 0.1 for the near-surface half of the approximation loss).
        guidance_k: inside points per convex pulled to 1 by the guidance loss (official: 20).
        level_set: a point is inside where O ≥ level_set (official: 0.5).
        lr: Adam's learning rate (official: 1e-4).
        width: the ResNet-18 encoder's width multiplier (official: 1; smaller ones make tests fast).
        eval_chunk: query points per evaluation pass (bounds memory; results do not depend on it).
        init: "keras", the official code's initialisation (Glorot-uniform kernels, zero biases, BN scale 1), or
            "torch", PyTorch's layer defaults with timm's ResNet (the catalogue's CPU entries were measured so).
        weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, dims: int = 2, K: int = 50, H: int = 25, latent: int = 256, in_chans: int = 1,
                 sigma: float = 75.0, hidden: list[int] = [1024, 1024, 2048], n_box: int = 256,
                 w_decomposition: float = 0.1, w_unique: float = 0.001, w_guidance: float = 0.01,
                 w_localisation: float = 1.0, w_surface: float = 0.1, guidance_k: int = 20, level_set: float = 0.5,
                 lr: float = 1e-4, width: float = 1.0, eval_chunk: int = 1024, init: str = "keras",
                 weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.net = CvxNet(dims, K, H, latent, in_chans, sigma, tuple(hidden), width, init)
        self.iou = torch.nn.ModuleDict({s: torchmetrics.MeanMetric() for s in ("val", "test")})
        self.init_weights_from(weights)

    def forward(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """The shape's indicator O [B, N] at points [B, N, dims]."""
        return self.occupancy(images, points).O

    def occupancy(self, images: torch.Tensor, points: torch.Tensor) -> Occupancy:
        """All indicators at points, evaluated `eval_chunk` points at a time."""
        p = self.net.encode(images)
        parts = [self.net.convexes(p, x) for x in points.split(self.hparams.eval_chunk, dim=1)]
        K = p.c.shape[1]
        return Occupancy(torch.cat([o.O for o in parts], 1), torch.cat([o.C for o in parts], 2),
                         torch.cat([o.overlap[:, :-K] for o in parts] + [parts[0].overlap[:, -K:]], 1))

    def losses(self, batch):
        images, points, labels = batch[:3]
        occ, p = self.net(images, points)
        hp = self.hparams
        return cvxnet_losses(occ, p, points, labels, min(hp.n_box, points.shape[1]), hp.w_decomposition,
                             hp.w_unique, hp.w_guidance, hp.w_localisation, hp.w_surface, hp.guidance_k)

    def training_step(self, batch, batch_idx):
        loss = self.losses(batch)
        bs = len(batch[0])
        self.log("train/loss", loss.total, prog_bar=True, batch_size=bs)
        for name in ("approximation", "decomposition", "unique", "guidance", "localisation"):
            self.log(f"train/{name}", getattr(loss, name), batch_size=bs)
        return loss.total

    def iou_per_shape(self, occ: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """IoU [B] of {O ≥ level_set} against the occupancy labels (official: at 100,000 box points)."""
        return occupancy_iou(occ >= self.hparams.level_set, labels > 0.5)

    def evaluate(self, batch, stage: str) -> None:
        images, points, labels = batch[:3]
        occ = self.occupancy(images, points)
        self.iou[stage].update(self.iou_per_shape(occ.O, labels))
        self.log(f"{stage}/iou", self.iou[stage], prog_bar=True, batch_size=len(images))
        self.log(f"{stage}/mse", (occ.O - labels).square().mean(), sync_dist=True, batch_size=len(images))

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """Decomposition pictures, IoU per class and how many convexes each shape uses (analysis.py)."""
        if datamodule is None:
            return {}
        from zoo.models.cvxnet.analysis import analyse

        return analyse(self, datamodule, folder)
