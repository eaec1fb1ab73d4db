"""The paper's measurements beside the module: one-shot identification under novel lights (inferred albedo and
normals against raw pixels), relighting against copying the probe, normals against the training set's mean shape,
and a picture of single-image inference on held-out identities."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zoo._plots import _pyplot, _save
from zoo.data.lambertian import frontal_index
from zoo.models.deep_lambertian.model import render
from zoo.models.deep_lambertian.module import angle_deg


@torch.no_grad()
def infer_all(module, dataset, chunk: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Single-image inference on every image of every identity: images [N, L, P], albedo a ⊙ |ℓ| [N, L, P],
    unit normals [N, L, P, 3], inferred lights [N, L, 3], the true lights [N, L, 3], true normals and albedo."""
    hp = module.hparams
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("images", "albedo", "normal", "light", "true_light",
                                                           "true_normal", "true_albedo")}
    for i, start in enumerate(range(0, len(dataset), chunk)):
        x, light, _, albedo, normal = dataset.__getitems__(list(range(start, min(start + chunk, len(dataset)))))
        B, L = x.shape[:2]
        v = x.flatten(2).reshape(B * L, -1).to(module.device)
        z = module.net.infer(v, hp.infer_steps, hp.burn_in, hp.sample, torch.Generator().manual_seed(seed + i))
        scale = z.light.norm(dim=-1, keepdim=True)
        out["images"].append(x.flatten(2))
        out["albedo"].append((z.albedo * scale).view(B, L, -1).cpu())
        n = z.normal / z.normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        out["normal"].append(n.view(B, L, -1, 3).cpu())
        out["light"].append(z.light.view(B, L, 3).cpu())
        out["true_light"].append(light)
        out["true_normal"].append(normal.flatten(1, 2))
        out["true_albedo"].append(albedo.flatten(1))
    return {k: torch.cat(v) for k, v in out.items()}


def one_shot(features: torch.Tensor, gallery: int) -> float:
    """Nearest-neighbour identification by cosine similarity: features [N, L, D] of N identities under L lights;
    the gallery holds each identity's image under light `gallery`, the probes are all the others."""
    f = F.normalize(features.flatten(2), dim=-1)
    N, L = f.shape[:2]
    probes = torch.cat([f[:, :gallery], f[:, gallery + 1:]], 1).reshape(N * (L - 1), -1)
    labels = torch.arange(N).repeat_interleave(L - 1)
    return (probes @ f[:, gallery].T).argmax(1).eq(labels).double().mean().item()


def inference_figure(r: dict[str, torch.Tensor], path: Path, size: int, n: int = 4) -> Path:
    """Rows per held-out identity: the one input image (side light), inferred and true albedo, inferred and true
    normals (as RGB), then the identity relit under three other lights: prediction over truth."""
    plt = _pyplot()
    N, L = r["images"].shape[:2]
    probe = int(r["true_light"][0, :, 0].argmin())  # lit from one side
    targets = [int(i) for i in torch.linspace(0, L - 1, 3).round().long()]
    picks = torch.linspace(0, N - 1, n).round().long().tolist()
    cols = 5 + 3
    fig, axes = plt.subplots(n, cols, figsize=(1.25 * cols, 1.4 * n))

    def img(x):
        return x.view(size, size).clamp(0, 1).numpy()

    def rgb(nrm):
        return ((nrm.view(size, size, 3) + 1) / 2 * (nrm.view(size, size, 3).norm(dim=-1, keepdim=True) > 0)
                ).clamp(0, 1).numpy()

    for row, i in enumerate(picks):
        a, nrm = r["albedo"][i, probe], r["normal"][i, probe]
        panels = [img(r["images"][i, probe]), img(a), img(r["true_albedo"][i]), rgb(nrm * (r["true_albedo"][i] > 0)
                                                                                      [:, None]),
                  rgb(r["true_normal"][i])]
        for j, t in enumerate(targets):
            pred = render(a, nrm, r["true_light"][i, t])
            panels.append(torch.cat([torch.from_numpy(img(pred)), torch.from_numpy(img(r["images"][i, t]))], 0)
                          .numpy())
        for j, p in enumerate(panels):
            axes[row, j].imshow(p, cmap=None if p.ndim == 3 else "gray", vmin=0, vmax=1)
    titles = ["input (one image)", "albedo, inferred", "albedo, true", "normals, inferred", "normals, true",
              *[f"relit: light {t}\npredicted / true" for t in targets]]
    for j, t in enumerate(titles):
        axes[0, j].set_title(t, fontsize=6)
    for a in axes.flat:
        a.set_xticks([]), a.set_yticks([])
    return _save(fig, path, "Deep Lambertian Network: single-image inference on held-out identities")


def analyse(module, datamodule, folder: Path | None) -> dict[str, Any]:
    datamodule.setup("test")
    module.eval()
    r = infer_all(module, datamodule.test_set, seed=1)
    gallery = frontal_index(r["true_light"][0])
    N, L, P = r["images"].shape
    metrics = {"oneshot/pixels": one_shot(r["images"], gallery),
               "oneshot/albedo": one_shot(r["albedo"], gallery),
               "oneshot/albedo_normals": one_shot(torch.cat([F.normalize(r["albedo"], dim=-1),
                                                             F.normalize(r["normal"].flatten(2), dim=-1)], -1),
                                                  gallery)}
    obj = r["true_normal"].norm(dim=-1) > 0
    known = bool(obj.any()) and bool(torch.isfinite(r["true_normal"]).all())
    if known:
        mean_n = module.net.normal_mean.view(1, P, 3).cpu()
        ang = angle_deg(r["normal"], r["true_normal"][:, None])
        metrics["normals/inferred_deg"] = ang[obj[:, None].expand_as(ang)].mean().item()
        metrics["normals/mean_shape_deg"] = angle_deg(mean_n.expand(N, -1, -1), r["true_normal"])[obj].mean().item()
    tables = {"One-shot identification under novel lights (nearest neighbour, cosine; gallery: the frontal light)": (
        "| features | accuracy |\n|---|---|\n"
        f"| raw pixels | {metrics['oneshot/pixels']:.3f} |\n"
        f"| inferred albedo | {metrics['oneshot/albedo']:.3f} |\n"
        f"| inferred albedo and normals (each unit length) | {metrics['oneshot/albedo_normals']:.3f} |")}
    if known:
        tables["Surface normals from one image (mean angle to the truth over the object)"] = (
            "| estimate | degrees |\n|---|---|\n"
            f"| inferred (posterior mean) | {metrics['normals/inferred_deg']:.1f} |\n"
            f"| the training set's mean normals | {metrics['normals/mean_shape_deg']:.1f} |")
    out: dict[str, Any] = {"metrics": metrics, "tables": tables}
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        size = int(round(P ** 0.5))
        out["figures"] = {"inference.png": inference_figure(r, folder / "inference.png", size)}
    return out
