"""Lightning glue for Cerberus: training on triples of images (one frame from two cameras, and another frame from
the first camera) by reconstruction through the soft rasteriser plus the viewpoint and articulation invariances of
the part shapes; evaluation of reconstruction, novel views, the parts' consistency across views and their agreement
with the body's true parts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchmetrics
from torchmetrics.clustering import NormalizedMutualInfoScore

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.data.posed_views import default_light
from zoo.models.cerberus.model import (Cerberus, Parts, Rendered, correspondence, invariance_loss, iou_loss,
                                       render_parts)

METRICS = ("sil_iou", "image_mse", "novel_view_iou", "novel_view_iou_copy", "view_agreement",
           "view_agreement_chance")


@register_model("cerberus")
class CerberusModule(ZooModule):
    """Cerberus (Deng, Kornblith & Hinton 2019; arXiv 1905.11940) on batches of view triples (dicts with `images`,
    `mask`, `depth`, `parts`, `rotation` [B, 3, ...]; zoo.data.posed_views).

    Loss per step, over the 3B images: w_sil (1 − soft IoU of silhouettes) + w_image (pixel MSE of the shaded
    render) + w_lap (Laplacian of the offsets, smooth parts) + w_view (shapes of image 0 against image 1: the same
    frame from another camera) + w_art (image 0 against image 2: another pose from the same camera).

    Evaluation, on each triple's first two images (one frame, two cameras):
      sil_iou, image_mse    reconstruction of the first image (silhouette > 0.5 against the mask; pixel MSE);
      novel_view_iou        the first image's parts turned to the second camera (known rotation, depth centred)
                            against the second image's mask; novel_view_iou_copy: the first mask itself;
      view_agreement        surface points seen in both images (depth test): the fraction that the same head
                            covers in both; view_agreement_chance: the same with either image's labels shuffled;
      view_kappa            Cohen's κ of the two: (agreement − chance) / (1 − chance), so that heads of unequal
                            sizes do not score by their sizes alone;
      part_nmi              normalised mutual information of the head covering each body pixel with the body part
                            (CMU skeleton) showing there.

    Args:
        parts, level, width, hidden, extent, min_scale, max_scale, init_scale, max_offset: the network
            (model.Cerberus); extent must be the data's.
        size: the images' side; ambient: the shading floor (the data's); sigma, gamma, threshold: the soft
            rasteriser's (Soft Rasterizer's defaults for σ and the threshold).
        w_sil, w_image, w_lap, w_view, w_art: the loss weights (w_view = w_art = 0: the ablation without
            invariances).
        lr: Adam's learning rate. weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, parts: int = 8, level: int = 1, width: float = 1.0, hidden: int = 128, extent: float = 0.55,
                 min_scale: float = 0.02, max_scale: float = 0.4, init_scale: float = 0.08, max_offset: float = 0.5,
                 size: int = 32, ambient: float = 0.25, sigma: float = 1e-4, gamma: float = 3e-3,
                 threshold: float = 1e-4, w_sil: float = 1.0,
                 w_image: float = 1.0, w_lap: float = 0.1, w_view: float = 1.0, w_art: float = 1.0,
                 lr: float = 1e-4, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.net = Cerberus(parts, level, 1, width, hidden, extent, min_scale, max_scale, init_scale, max_offset)
        self.register_buffer("light", default_light().float(), persistent=False)
        self.scores = torch.nn.ModuleDict({f"{s}_{m}": torchmetrics.MeanMetric()
                                           for s in ("val", "test") for m in METRICS})
        self.nmi = torch.nn.ModuleDict({s: NormalizedMutualInfoScore() for s in ("val", "test")})
        self.init_weights_from(weights)

    def forward(self, images: torch.Tensor) -> Parts:
        """The parts of images [B, 1, H, W]."""
        return self.net(images)

    def render(self, vertices: torch.Tensor, parts: bool = False) -> Rendered:
        hp = self.hparams
        return render_parts(self.net, vertices, self.light, hp.size, hp.ambient, hp.sigma, hp.gamma, hp.threshold,
                            parts)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hp = self.hparams
        x = batch["images"]
        B, T = x.shape[:2]
        out = self.net(x.flatten(0, 1)[:, None])
        r = self.render(out.vertices)
        shape = out.shape.unflatten(0, (B, T))
        terms = {"sil": iou_loss(r.silhouette, batch["mask"].flatten(0, 1).to(x)).mean(),
                 "image": (r.image - x.flatten(0, 1)).pow(2).mean(),
                 "lap": torch.einsum("uv,bpvi->bpui", self.net.laplacian, out.offsets).pow(2).sum(-1).mean(),
                 "view": invariance_loss(shape[:, 0], shape[:, 1], hp.extent),
                 "art": invariance_loss(shape[:, 0], shape[:, 2], hp.extent)}
        terms["total"] = sum(getattr(hp, f"w_{k}") * v for k, v in terms.items())
        return terms

    def training_step(self, batch, batch_idx):
        terms = self.losses(batch)
        B = len(batch["images"])
        for k, v in terms.items():
            self.log(f"train/{k}", v, prog_bar=k in ("total", "sil"), batch_size=B)
        return terms["total"]

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def scores_of(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-item scores [B] of the first two images of each triple, plus the pixels for part_nmi."""
        hp = self.hparams
        x, mask, depth, R = batch["images"][:, :2], batch["mask"][:, :2], batch["depth"][:, :2], batch["rotation"]
        B = len(x)
        out = self.net(x.flatten(0, 1)[:, None])
        r = self.render(out.vertices, parts=True)
        sil = r.silhouette.unflatten(0, (B, 2))
        covered = sil > 0.5
        labels = torch.where(covered, r.part_probs.argmax(-1).unflatten(0, (B, 2)), -1)

        def iou(pred, truth):
            return (pred & truth).flatten(1).sum(1) / (pred | truth).flatten(1).sum(1).clamp_min(1)

        v = out.vertices.unflatten(0, (B, 2))[:, 0]  # the first image's parts [B, P, V, 3]
        z = v[..., 2]
        v = v - torch.stack([torch.zeros_like(z[:, 0, 0]), torch.zeros_like(z[:, 0, 0]),
                             (z.flatten(1).amax(1) + z.flatten(1).amin(1)) / 2], -1)[:, None, None]
        turn = R[:, 1] @ R[:, 0].transpose(-1, -2)
        novel = self.render(torch.einsum("bij,bpvj->bpvi", turn, v)).silhouette > 0.5
        idx = correspondence(depth[:, 0], depth[:, 1], R[:, 0], R[:, 1], hp.extent)  # [B, H W]
        la, lb = labels[:, 0].flatten(1), labels[:, 1].flatten(1)
        lb_at = torch.where(idx >= 0, lb.gather(1, idx.clamp_min(0)), -1)
        valid = (la >= 0) & (lb_at >= 0)
        n = valid.sum(1)
        agree = ((la == lb_at) & valid).sum(1)
        oh_a = torch.nn.functional.one_hot(la.clamp_min(0), hp.parts) * valid[..., None]
        oh_b = torch.nn.functional.one_hot(lb_at.clamp_min(0), hp.parts) * valid[..., None]
        chance = (oh_a.sum(1) * oh_b.sum(1)).sum(1) / (n * n).clamp_min(1)
        body = mask[:, 0] & covered[:, 0]
        return {"sil_iou": iou(covered[:, 0], mask[:, 0]),
                "image_mse": (r.image.unflatten(0, (B, 2))[:, 0] - x[:, 0]).pow(2).flatten(1).mean(1),
                "novel_view_iou": iou(novel, mask[:, 1]), "novel_view_iou_copy": iou(mask[:, 0], mask[:, 1]),
                "view_agreement": agree / n.clamp_min(1), "view_agreement_chance": chance, "pairs": n,
                "nmi_pred": labels[:, 0][body], "nmi_true": batch["parts"][:, 0][body]}

    def evaluate(self, batch, stage: str) -> None:
        s = self.scores_of(batch)
        B = len(batch["images"])
        for m in METRICS:
            weight = s["pairs"].float() if m.startswith("view_agreement") else torch.ones_like(s[m])
            self.scores[f"{stage}_{m}"].update(s[m], weight)
            self.log(f"{stage}/{m}", self.scores[f"{stage}_{m}"], prog_bar=m == "view_agreement", batch_size=B)
        if len(s["nmi_pred"]):
            self.nmi[stage].update(s["nmi_pred"], s["nmi_true"])
        self.log(f"{stage}/part_nmi", self.nmi[stage], batch_size=B)

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, "test")

    def log_kappa(self, stage: str) -> None:
        """Cohen's κ of the heads across views, over the whole split: (agreement − chance) / (1 − chance)."""
        a = self.scores[f"{stage}_view_agreement"].compute()
        c = self.scores[f"{stage}_view_agreement_chance"].compute()
        self.log(f"{stage}/view_kappa", (a - c) / (1 - c).clamp_min(1e-12))

    def on_validation_epoch_end(self) -> None:
        self.log_kappa("val")

    def on_test_epoch_end(self) -> None:
        self.log_kappa("test")

    # ---------------------------------------------------------------- the paper's pictures
    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """Pictures of held-out frames: input, reconstruction, the parts, a new viewpoint and new lighting."""
        if datamodule is None or folder is None:
            return {}
        from zoo.models.cerberus.analysis import analyse

        return analyse(self, datamodule, folder)
