"""CvxNet's measurements beside the module: IoU per class (2-D) or per shape (3-D), how many of the K convexes a
shape uses, the Chamfer distance and F-score of the reconstructed surfaces (3-D: marching cubes of the predicted
occupancy against exact surface samples, the official evaluation's measures), and pictures of the decompositions
(the paper's figures colour each convex of a reconstructed shape)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo._plots import _pyplot, _save


@torch.no_grad()
def measure(module, dataset, batch_size: int = 100) -> dict[str, torch.Tensor]:
    """Per test shape: IoU [n], convexes used [n] (those whose indicator reaches 0.5 at some evaluation point) and
    class labels [n]."""
    module.eval()
    iou, used, labels = [], [], []
    for start in range(0, len(dataset), batch_size):
        images, points, occ_true, y = dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset)))))
        occ = module.occupancy(images.to(module.device), points.to(module.device))
        iou.append(module.iou_per_shape(occ.O, occ_true.to(module.device)).cpu())
        used.append((occ.C.amax(-1) >= module.hparams.level_set).sum(-1).cpu())
        labels.append(y)
    return {"iou": torch.cat(iou), "used": torch.cat(used), "labels": torch.cat(labels)}


@torch.no_grad()
def decomposition_figure(module, dataset, path: Path, n: int = 10, grid: int = 112) -> Path:
    """Rows: the input silhouette, the reconstruction (O ≥ 0.5) and its convexes, each in its own colour (the
    convex with the largest indicator at each inside point)."""
    from zoo.data.silhouettes import grid_points

    plt = _pyplot()
    picks = [int(i) for i in torch.linspace(0, len(dataset) - 1, n).round()]
    images = dataset.__getitems__(picks)[0].to(module.device)
    points = grid_points(grid).to(module.device).expand(len(picks), -1, -1)
    occ = module.occupancy(images, points)
    inside = (occ.O >= module.hparams.level_set).reshape(-1, grid, grid).cpu()
    owner = occ.C.argmax(1).reshape(-1, grid, grid).cpu()
    K = occ.C.shape[1]
    colours = plt.get_cmap("tab20" if K <= 20 else "hsv", K)
    fig, axes = plt.subplots(3, n, figsize=(1.4 * n, 4.4))
    for j in range(n):
        axes[0, j].imshow(images[j, 0].cpu(), cmap="gray_r", extent=(-0.4, 0.4, 0.4, -0.4))
        axes[1, j].imshow(inside[j], cmap="gray_r", extent=(-0.5, 0.5, 0.5, -0.5))
        rgb = torch.ones(grid, grid, 3)
        rgb[inside[j]] = torch.tensor(colours(owner[j][inside[j]].numpy())[:, :3], dtype=torch.float32)
        axes[2, j].imshow(rgb.numpy(), extent=(-0.5, 0.5, 0.5, -0.5))
        for a in axes[:, j]:
            a.set_xlim(-0.5, 0.5), a.set_ylim(0.5, -0.5), a.set_xticks([]), a.set_yticks([])
    for a, name in zip(axes[:, 0], ("input", "O ≥ 0.5", "convexes")):
        a.set_ylabel(name)
    return _save(fig, path, f"CvxNet, K = {K}: test shapes and their convex decompositions")


def analyse(module, datamodule, folder: Path | None) -> dict[str, Any]:
    datamodule.setup("test")
    if getattr(datamodule, "dims", 2) == 3:  # the surface measures need the cached exact surface samples
        return analyse_3d(module, datamodule, folder) if hasattr(datamodule.test_set, "c") else {}
    test = datamodule.test_set
    m = measure(module, test)
    classes = list(getattr(datamodule, "classes", ())) or [str(c) for c in m["labels"].unique().tolist()]
    rows = ["| class | shapes | IoU | convexes used |", "|---|---|---|---|"]
    for c, name in enumerate(classes):
        keep = m["labels"] == c
        if keep.any():
            rows.append(f"| {name} | {int(keep.sum())} | {m['iou'][keep].mean():.3f} | "
                        f"{m['used'][keep].float().mean():.1f} |")
    rows.append(f"| all | {len(m['iou'])} | {m['iou'].mean():.3f} | {m['used'].float().mean():.1f} |")
    out: dict[str, Any] = {
        "metrics": {"convexes/used_mean": float(m["used"].float().mean()),
                    "iou/worst_class": min(float(m["iou"][m["labels"] == c].mean())
                                           for c in m["labels"].unique().tolist())},
        "tables": {"IoU by class (test shapes)": "\n".join(rows)},
    }
    if folder is not None:
        out["figures"] = {"decompositions.png": decomposition_figure(module, test, Path(folder) / "decompositions.png")}
    return out


# ---------------------------------------------------------------- 3-D
@torch.no_grad()
def surfaces(module, dataset, res: int, samples: int = 16384, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per shape: Chamfer distance and F-score (τ = 0.01) between `samples` points on the marching-cubes surface of
    the predicted occupancy (on a res³ grid) and the cached exact surface samples."""
    from zoo.data.meshes import grid_points3, marching_cubes, sample_surface
    from zoo.metrics import chamfer_distance, fscore

    g = torch.Generator().manual_seed(seed)
    grid = grid_points3(res).float().to(module.device)[None]
    chamfer, fs = [], []
    for i in range(len(dataset)):
        views = dataset.views[i:i + 1].to(module.device)
        occ = module.occupancy(views, grid).O.reshape(res, res, res).cpu()
        truth = dataset.c["surface"][i]
        if occ.max() < module.hparams.level_set or occ.min() >= module.hparams.level_set:
            chamfer.append(float("inf")), fs.append(0.0)  # no surface at all
            continue
        pred = sample_surface(marching_cubes(occ, module.hparams.level_set), len(truth), g).float()
        chamfer.append(float(chamfer_distance(pred, truth)))
        fs.append(float(fscore(pred, truth, 0.01)))
    return {"chamfer": torch.tensor(chamfer), "fscore": torch.tensor(fs)}


@torch.no_grad()
def decomposition_figure_3d(module, dataset, names: list[str], path: Path, n: int = 8, res: int = 32) -> Path:
    """Top: each shape (marching cubes of its exact occupancy grid); bottom: its convexes, each convex's own
    0.5 level set in its own colour."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from zoo.data.meshes import grid_points3, marching_cubes

    plt = _pyplot()
    picks = [int(i) for i in torch.linspace(0, len(dataset) - 1, n).round()]
    grid = grid_points3(res).float().to(module.device)[None]
    fig = plt.figure(figsize=(2.2 * n, 4.6))
    K = module.hparams.K
    colours = plt.get_cmap("tab20" if K <= 20 else "hsv", K)

    def draw(ax, meshes):
        for mesh, colour in meshes:
            ax.add_collection3d(Poly3DCollection(mesh.triangles[:, :, [0, 2, 1]].numpy(), facecolors=colour,
                                                 edgecolor="none", shade=True))
        ax.set_xlim(-0.5, 0.5), ax.set_ylim(-0.5, 0.5), ax.set_zlim(-0.5, 0.5)
        ax.set_axis_off()
        ax.view_init(elev=20, azim=-60)

    for j, i in enumerate(picks):
        truth = dataset.c["grid"][i].double()
        ax = fig.add_subplot(2, n, j + 1, projection="3d")
        draw(ax, [(marching_cubes(truth), (0.6, 0.6, 0.6))] if truth.any() else [])
        ax.set_title(names[i] if i < len(names) else str(i), fontsize=8)
        occ = module.occupancy(dataset.views[i:i + 1].to(module.device), grid)
        parts = []
        for k in range(K):
            ck = occ.C[0, k].reshape(res, res, res).cpu()
            if ck.max() >= 0.5 > ck.min():
                parts.append((marching_cubes(ck), colours(k)))
        draw(fig.add_subplot(2, n, n + j + 1, projection="3d"), parts)
    return _save(fig, path, f"CvxNet, K = {K}: shapes (top) and their convexes (bottom)")


def analyse_3d(module, datamodule, folder: Path | None) -> dict[str, Any]:
    test = datamodule.test_set
    m = measure(module, test, batch_size=8)
    s = surfaces(module, test, test.res)
    names = datamodule.names
    rows = ["| shape | IoU | Chamfer | F-score | convexes used |", "|---|---|---|---|---|"]
    for i in m["iou"].argsort().tolist():
        rows.append(f"| {names[i]} | {m['iou'][i]:.3f} | {s['chamfer'][i]:.5f} | {s['fscore'][i]:.3f} | "
                    f"{int(m['used'][i])} |")
    finite = s["chamfer"][s["chamfer"].isfinite()]
    out: dict[str, Any] = {
        "metrics": {"convexes/used_mean": float(m["used"].float().mean()),
                    "surface/chamfer_mean": float(finite.mean()) if len(finite) else float("inf"),
                    "surface/chamfer_median": float(s["chamfer"].median()),
                    "surface/fscore_mean": float(s["fscore"].mean())},
        "tables": {"Per shape, worst IoU first (Chamfer: mean squared distance both ways, unscaled; F-score at "
                   "0.01)": "\n".join(rows)},
    }
    if folder is not None:
        out["figures"] = {"decompositions.png": decomposition_figure_3d(module, test, names,
                                                                         Path(folder) / "decompositions.png")}
    return out
