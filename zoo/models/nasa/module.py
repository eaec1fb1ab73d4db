"""Lightning glue for NASA: the official training (Adam 1e-4, the occupancy, label and minimal losses of model.py at
their official weights, 2,048 posed mesh vertices drawn per frame for the label loss) and evaluation (IoU of the
0.5 level set at box samples, per frame, averaged over frames; and the same restricted to the box samples near a
joint, where skinning deforms the body and the rigid variant is expected to fall short)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchmetrics

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.metrics import occupancy_iou
from zoo.models.nasa.model import NASA, NASAOutput, nasa_losses


@register_model("nasa")
class NASAModule(ZooModule):
    """NASA (arXiv 1912.03207), rigid (R) or deformable (D), on batches of posed frames (dicts with `points`,
    `occupancy`, `transforms`, `root`, `joints`, `vertices`, `vertex_parts`; zoo.data.articulated).

    Args:
        parts: K, the body's parts (official: the 24 SMPL bones).
        deformable: True for D, False for R.
        total_width, code, soft_blend: the network (model.NASA; official 960, 4, 5).
        n_box: how many of a training frame's points are box samples (the minimal loss's points).
        sample_vertices: posed mesh vertices drawn (with replacement) per frame for the label loss (official 2,048).
        w_label, w_minimal: the loss weights (official 0.5 and 0.05).
        level_set: inside where O ≥ level_set (official 0.5).
        near_joint: the radius around the joints of the near-joint IoU (body units; the body is 0.9 tall).
        lr: Adam's learning rate (official 1e-4).
        eval_chunk: query points per evaluation pass (bounds memory; results do not depend on it).
        weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, parts: int = 19, deformable: bool = True, total_width: int = 960, code: int = 4,
                 soft_blend: float = 5.0, n_box: int = 1024, sample_vertices: int = 2048, w_label: float = 0.5,
                 w_minimal: float = 0.05, level_set: float = 0.5, near_joint: float = 0.05, lr: float = 1e-4,
                 eval_chunk: int = 4096, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.net = NASA(parts, deformable, total_width, code, soft_blend)
        self.iou = torch.nn.ModuleDict({f"{s}_{k}": torchmetrics.MeanMetric()
                                        for s in ("val", "test") for k in ("all", "near")})
        self.init_weights_from(weights)

    def forward(self, points: torch.Tensor, transforms: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
        """The blended occupancy O [B, N] at posed points [B, N, 3]."""
        return self.occupancy(points, transforms, root).O

    def occupancy(self, points: torch.Tensor, transforms: torch.Tensor, root: torch.Tensor) -> NASAOutput:
        outs = [self.net(p, transforms, root) for p in points.split(self.hparams.eval_chunk, dim=1)]
        return NASAOutput(torch.cat([o.O for o in outs], 1), torch.cat([o.parts for o in outs], 2))

    def losses(self, batch: dict[str, torch.Tensor]):
        hp = self.hparams
        out = self.net(batch["points"], batch["transforms"], batch["root"])
        V = batch["vertices"].shape[1]
        pick = torch.randint(V, (len(batch["vertices"]), hp.sample_vertices), device=self.device)
        verts = batch["vertices"].gather(1, pick[..., None].expand(-1, -1, 3))
        vparts = batch["vertex_parts"].gather(1, pick)
        at_vertices = self.net(verts, batch["transforms"], batch["root"]).parts
        return nasa_losses(out, batch["occupancy"], at_vertices, vparts, min(hp.n_box, batch["points"].shape[1]),
                           hp.w_label, hp.w_minimal, hp.level_set)

    def training_step(self, batch, batch_idx):
        loss = self.losses(batch)
        bs = len(batch["points"])
        self.log("train/loss", loss.total, prog_bar=True, batch_size=bs)
        for name in ("occupancy", "label", "minimal"):
            self.log(f"train/{name}", getattr(loss, name), batch_size=bs)
        return loss.total

    def near_joints(self, points: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """Bool [B, N]: the points within `near_joint` of some joint."""
        return torch.cdist(points, joints).amin(-1) <= self.hparams.near_joint

    def iou_per_frame(self, O: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        pred, truth = O >= self.hparams.level_set, labels >= 0.5
        if mask is not None:
            pred, truth = pred & mask, truth & mask
        return occupancy_iou(pred, truth)

    def evaluate(self, batch, stage: str) -> None:
        O = self.occupancy(batch["points"], batch["transforms"], batch["root"]).O
        bs = len(O)
        near = self.near_joints(batch["points"], batch["joints"])
        self.iou[f"{stage}_all"].update(self.iou_per_frame(O, batch["occupancy"]))
        self.iou[f"{stage}_near"].update(self.iou_per_frame(O, batch["occupancy"], near))
        self.log(f"{stage}/iou", self.iou[f"{stage}_all"], prog_bar=True, batch_size=bs)
        self.log(f"{stage}/iou_near_joints", self.iou[f"{stage}_near"], batch_size=bs)

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """IoU per test frame and pictures of the posed test bodies, coloured by part (analysis.py)."""
        if datamodule is None:
            return {}
        from zoo.models.nasa.analysis import analyse

        return analyse(self, datamodule, folder)
