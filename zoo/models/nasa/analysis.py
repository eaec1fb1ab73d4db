"""NASA's measurements beside the module: IoU per test frame (all box samples, and those near a joint) and pictures
of posed test bodies, the true inside points beside the predicted ones coloured by the part that dominates them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo._plots import _pyplot, _save


@torch.no_grad()
def measure(module, dataset, batch_size: int = 4) -> dict[str, torch.Tensor]:
    module.eval()
    iou, near = [], []
    for start in range(0, len(dataset), batch_size):
        b = dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset)))))
        b = {k: v.to(module.device) for k, v in b.items()}
        O = module.occupancy(b["points"], b["transforms"], b["root"]).O
        iou.append(module.iou_per_frame(O, b["occupancy"]).cpu())
        near.append(module.iou_per_frame(O, b["occupancy"], module.near_joints(b["points"], b["joints"])).cpu())
    return {"iou": torch.cat(iou), "near": torch.cat(near)}


@torch.no_grad()
def body_figure(module, dataset, path: Path, n: int = 6) -> Path:
    plt = _pyplot()
    picks = [int(i) for i in torch.linspace(0, len(dataset) - 1, n).round()]
    b = {k: v.to(module.device) for k, v in dataset.__getitems__(picks).items()}
    out = module.occupancy(b["points"], b["transforms"], b["root"])
    pred = (out.O >= module.hparams.level_set).cpu()
    owner = out.parts.argmax(1).cpu()
    pts, truth = b["points"].cpu(), b["occupancy"].cpu() >= 0.5
    K = out.parts.shape[1]
    colours = plt.get_cmap("tab20" if K <= 20 else "hsv", K)
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 4.6))
    for j in range(n):
        t, p = truth[j], pred[j]
        axes[0, j].scatter(pts[j, t, 0], pts[j, t, 2], s=0.5, c="0.4")
        axes[1, j].scatter(pts[j, p, 0], pts[j, p, 2], s=0.5, c=colours(owner[j, p].numpy()))
        for a in axes[:, j]:
            a.set_aspect("equal"), a.set_xticks([]), a.set_yticks([])
            a.set_xlim(-0.6, 0.6), a.set_ylim(-0.75, 0.55)
    axes[0, 0].set_ylabel("true inside")
    axes[1, 0].set_ylabel("predicted, by part")
    kind = "D (deformable)" if module.hparams.deformable else "R (rigid)"
    return _save(fig, path, f"NASA {kind} on held-out frames (front view of the inside box samples)")


def analyse(module, datamodule, folder: Path | None) -> dict[str, Any]:
    datamodule.setup("test")
    m = measure(module, datamodule.test_set)
    metrics = {"iou/worst_frame": m["iou"].min().item(), "iou/median_frame": m["iou"].median().item(),
               "iou_near_joints/worst_frame": m["near"].min().item()}
    order = m["iou"].argsort()
    rows = [f"| {int(i)} | {m['iou'][i]:.3f} | {m['near'][i]:.3f} |" for i in order[:5]]
    out: dict[str, Any] = {"metrics": metrics, "tables": {"The five worst test frames": "\n".join(
        ["| test frame | IoU | IoU near joints |", "|---|---|---|", *rows])}}
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out["figures"] = {"bodies.png": body_figure(module, datamodule.test_set, folder / "bodies.png")}
    return out
