"""Measurements and pictures for Cerberus' card: how natural the parts are (NMI with the body's true parts, against
k-means clusters of the same pixels) and, as the paper's Figure 1 lays them out, for held-out frames, the input, the 3-D
reconstruction, its parts (one colour per head), the body's true parts, a new viewpoint (the parts turned to another
camera) beside that camera's true image, and new lighting."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo._plots import _pyplot, _save
from zoo.models.cerberus.model import render_parts


@torch.no_grad()
def derendering_figure(module, batch: dict[str, torch.Tensor], path: Path) -> Path:
    hp = module.hparams
    plt = _pyplot()
    cmap = plt.get_cmap("tab20")
    x = batch["images"]
    n = len(x)
    out = module.net(x[:, 0, None].to(module.device))
    r = module.render(out.vertices, parts=True)
    v = out.vertices
    z = v[..., 2]
    v = v - torch.stack([torch.zeros_like(z[:, 0, 0]), torch.zeros_like(z[:, 0, 0]),
                         (z.flatten(1).amax(1) + z.flatten(1).amin(1)) / 2], -1)[:, None, None]
    R = batch["rotation"].to(v)
    novel = module.render(torch.einsum("bij,bpvj->bpvi", R[:, 1] @ R[:, 0].transpose(-1, -2), v))
    side = torch.nn.functional.normalize(torch.tensor([1.0, 0.2, 0.4]), dim=0).to(v)
    relit = render_parts(module.net, out.vertices, side, hp.size, hp.ambient, hp.sigma, hp.gamma, hp.threshold)

    def parts_rgb(labels: torch.Tensor, covered: torch.Tensor):
        rgb = torch.tensor(cmap(labels.clamp_min(0).numpy() % 20))[..., :3]
        return (rgb * covered[..., None]).numpy()

    panels = [("input", lambda i: x[i, 0]), ("reconstruction", lambda i: r.image[i].cpu()),
              ("parts (heads)", lambda i: parts_rgb(r.part_probs[i].argmax(-1).cpu(), r.silhouette[i].cpu() > 0.5)),
              ("true body parts", lambda i: parts_rgb(batch["parts"][i, 0], batch["mask"][i, 0])),
              ("new viewpoint", lambda i: novel.image[i].cpu()), ("that view, true", lambda i: x[i, 1]),
              ("new lighting", lambda i: relit.image[i].cpu())]
    fig, axes = plt.subplots(n, len(panels), figsize=(1.3 * len(panels), 1.4 * n), squeeze=False)
    for i in range(n):
        for j, (title, f) in enumerate(panels):
            img = f(i)
            img = img.clamp(0, 1).numpy() if torch.is_tensor(img) else img
            axes[i, j].imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(title, fontsize=7)
    return _save(fig, path, "Cerberus: one image derendered into parts (held-out motion)")


def kmeans_pixels(points: torch.Tensor, valid: torch.Tensor, k: int, iters: int = 20) -> torch.Tensor:
    """Lloyd's k-means of each image's valid pixel positions (points [N, M, 2], valid [N, M]), all images at once:
    labels [N, M] (−1 where not valid). Centres start at the valid pixels at k evenly spaced ranks of height."""
    key = torch.where(valid, points[..., 1], torch.inf)
    order = key.argsort(1)
    n = valid.sum(1)
    ranks = (torch.linspace(0, 1, k, dtype=torch.float64)[None] * (n[:, None] - 1).clamp_min(0)).round().long()
    centres = points.gather(1, order.gather(1, ranks)[..., None].expand(-1, -1, 2))
    w = valid.to(points.dtype)[..., None]
    for _ in range(iters):
        labels = torch.cdist(points, centres).argmin(-1)
        onehot = torch.nn.functional.one_hot(labels, k).to(points.dtype) * w
        count = onehot.sum(1)[..., None]
        centres = torch.where(count > 0, onehot.transpose(1, 2) @ points / count.clamp_min(1), centres)
    return torch.where(valid, torch.cdist(points, centres).argmin(-1), -1)


@torch.no_grad()
def part_scores(module, data, chunk: int = 32) -> dict[str, float]:
    """NMI with the body's true parts of the head covering each body pixel, and of the k-means clusters (k = the
    heads) of the same pixels' positions: parts that are more than image regions score above the clusters."""
    from torchmetrics.functional.clustering import normalized_mutual_info_score

    from zoo.data.render import pixel_centres

    hp = module.hparams
    heads, clusters, truth = [], [], []
    for s in range(0, len(data), chunk):
        b = data.__getitems__(list(range(s, min(s + chunk, len(data)))))
        x = b["images"][:, 0, None].to(module.device)
        r = module.render(module.net(x).vertices, parts=True)
        label = r.part_probs.argmax(-1).cpu().flatten(1)
        valid = b["mask"][:, 0].flatten(1) & (r.silhouette.cpu().flatten(1) > 0.5)
        p = pixel_centres(hp.size, hp.extent)[None].expand(len(x), -1, -1).contiguous()
        heads.append(label[valid]), truth.append(b["parts"][:, 0].flatten(1)[valid])
        clusters.append(kmeans_pixels(p, valid, hp.parts)[valid])
    t = torch.cat(truth)
    return {"parts/nmi": normalized_mutual_info_score(torch.cat(heads), t).item(),
            "parts/nmi_kmeans": normalized_mutual_info_score(torch.cat(clusters), t).item()}


def analyse(module, datamodule, folder: Path) -> dict[str, Any]:
    datamodule.setup("test")
    module.eval()
    data = datamodule.test_set
    metrics = part_scores(module, data)
    picks = torch.linspace(0, len(data) - 1, min(4, len(data))).round().long().tolist()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = ("| parts from | NMI with the body's 19 parts |\n|---|---|\n"
             f"| Cerberus' heads | {metrics['parts/nmi']:.3f} |\n"
             f"| k-means of the same pixels' positions (k = {module.hparams.parts}) | {metrics['parts/nmi_kmeans']:.3f} |")
    return {"metrics": metrics,
            "tables": {"Natural parts: agreement of each body pixel's head with the true body part (held-out motion)":
                       table},
            "figures": {"derendering.png": derendering_figure(module, data.__getitems__(picks),
                                                               folder / "derendering.png")}}
