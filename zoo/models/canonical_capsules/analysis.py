"""Canonical Capsules' measurements beside the module.

- Unsupervised classification, as the official `classification.py`: a linear SVM (C = 0.1) and K-means with the
  clusters matched to classes by the Hungarian method on the training set ("equal_kmeans"), on the capsule features
  of clouds in random poses: the canonical descriptors flattened, then the canonical keypoints normalised (centred
  on their bounding box, scaled by its largest side). Baselines on the same clouds and poses: an occupancy
  histogram of the cloud as posed (`raw`), of the cloud canonicalised by PCA (`pca`), and of the upright cloud
  (`upright`, what a classifier could do without any rotation).
- Canonicalisation instability: the Chamfer distance between the canonical clouds of two random poses of one shape,
  each pose with its own draw of points (for the very same points PCA would be exactly stable, which says nothing
  about a second scan of the object), for the learned frame and for PCA.
- How many of the K capsules own at least one point (as the one it attends to most), per test cloud.
- Pictures: capsule decompositions of test clouds (of different classes where there are classes) in several poses,
  their canonical clouds and reconstructions.

PCA canonicalisation: centre on the mean, rotate onto the principal axes (largest variance first), and fix each
axis' sign so that the third moment along it is positive (a proper rotation in 3-D: the last axis' sign follows).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zoo._plots import _pyplot, _save
from zoo.metrics import chamfer_distance


def pca_canonical(x: torch.Tensor) -> torch.Tensor:
    """Clouds [B, N, d] centred and rotated onto their principal axes, signs fixed by skewness."""
    c = x - x.mean(1, keepdim=True)
    cov = torch.bmm(c.transpose(1, 2), c) / x.shape[1]
    _, vecs = torch.linalg.eigh(cov.double())  # ascending eigenvalues
    axes = vecs.flip(-1).to(x.dtype)  # columns: largest variance first
    proj = torch.bmm(c, axes)
    sign = torch.where(proj.pow(3).mean(1) >= 0, 1.0, -1.0)
    if x.shape[-1] == 3:  # keep a rotation: det = +1
        sign[:, 2] = sign[:, 0] * sign[:, 1] * torch.linalg.det(axes.double()).sign().to(x.dtype)
    return proj * sign[:, None]


def histogram(x: torch.Tensor, bins: int = 10, extent: float = 1.2) -> torch.Tensor:
    """The fraction of each cloud's points [B, N, d] in each cell of a bins^d grid over [-extent, extent]^d."""
    B, N, d = x.shape
    cell = ((x + extent) / (2 * extent) * bins).floor().long().clamp(0, bins - 1)
    flat = (cell * (bins ** torch.arange(d - 1, -1, -1))).sum(-1) + bins ** d * torch.arange(B)[:, None]
    return torch.bincount(flat.reshape(-1), minlength=B * bins ** d).view(B, -1).float() / N


def normalised_keypoints(mu: torch.Tensor) -> torch.Tensor:
    """Keypoints [B, d, K] as the official classification reads them: [B, K, d] centred on the bounding box of the
    K points, divided by the largest side of it."""
    k = mu.transpose(1, 2)
    k = k - (k.amax(1, keepdim=True) + k.amin(1, keepdim=True)) / 2
    scale = (k.amax((1, 2), keepdim=True) - k.amin((1, 2), keepdim=True)).clamp_min(1e-7)
    return k / scale


@torch.no_grad()
def features(module, dataset, batch_size: int = 100, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per cloud of the dataset, posed at random (seeded): the capsule features, the three histograms, the
    labels, and the instability of both frames (a second random pose of a second draw of points)."""
    import copy

    module.eval()
    redraw = copy.copy(dataset)
    redraw.seed = dataset.seed + 1000
    out: dict[str, list] = {k: [] for k in ("capsules", "raw", "pca", "upright", "labels", "inst_caps",
                                            "inst_pca", "used")}
    for start in range(0, len(dataset), batch_size):
        x, y = dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset)))))
        x = x.to(module.device)
        x2 = redraw.__getitems__(list(range(start, min(start + batch_size, len(dataset)))))[0].to(module.device)
        xa = module.eval_poses(x, 10_000 * (seed + 1) + start, 0)
        xb = module.eval_poses(x2, 10_000 * (seed + 1) + start, 1)
        can_a, caps = module.capsules(xa)
        can_b = module.canonicalise(xb)
        out["capsules"].append(torch.cat([caps.beta.flatten(1), normalised_keypoints(caps.mu).flatten(1)], 1).cpu())
        owner = caps.A.argmax(1)  # [B, N]: the capsule each point attends to most
        out["used"].append(F.one_hot(owner, caps.A.shape[1]).amax(1).sum(1).float().cpu())
        out["raw"].append(histogram(xa.cpu()))
        pa, pb = pca_canonical(xa), pca_canonical(xb)
        out["pca"].append(histogram(pa.cpu()))
        out["upright"].append(histogram((x - x.mean(1, keepdim=True)).cpu()))
        out["labels"].append(y.cpu())
        out["inst_caps"].append(chamfer_distance(can_a, can_b).cpu())
        out["inst_pca"].append(chamfer_distance(pa, pb).cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def linear_svm(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """Test accuracy of the official linear SVM (scikit-learn LinearSVC, C = 0.1)."""
    from sklearn.svm import LinearSVC

    clf = LinearSVC(C=0.1, max_iter=5000).fit(train_x.numpy(), train_y.numpy())
    return float(clf.score(test_x.numpy(), test_y.numpy()))


def matched_kmeans(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   classes: int, seed: int = 0) -> float:
    """Test accuracy of K-means (one cluster per class) whose clusters are matched to classes by the Hungarian
    method on the training set (the official `equal_kmeans`)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=classes, n_init=10, random_state=seed).fit(train_x.numpy())
    cost = torch.zeros(classes, classes, dtype=torch.long)
    cost.index_put_((torch.from_numpy(km.labels_).long(), train_y.long()), torch.ones(len(train_y), dtype=torch.long),
                    accumulate=True)
    _, col = linear_sum_assignment(cost.numpy(), maximize=True)
    pred = torch.from_numpy(col)[torch.from_numpy(km.predict(test_x.numpy())).long()]
    return float((pred == test_y).float().mean())


@torch.no_grad()
def capsule_figure(module, dataset, path: Path, n: int = 4, poses: int = 4) -> Path:
    """Rows per example: the cloud in `poses` random poses coloured by capsule, the canonical clouds of those poses
    overlaid, and the reconstruction coloured by the capsule that drew each point."""
    plt = _pyplot()
    module.eval()
    labels = dataset.labels.tolist()
    picks = [labels.index(c) for c in sorted(set(labels))][:n]  # different classes (shapes) where there are
    picks += [i for i in range(len(labels)) if i not in picks][:n - len(picks)]
    x, _ = dataset.__getitems__(picks)
    x = x.to(module.device)
    K = module.hparams.K
    colours = plt.get_cmap("tab10" if K <= 10 else "tab20", K)
    fig, axes = plt.subplots(n, poses + 2, figsize=(1.7 * (poses + 2), 1.7 * n))
    pose_colours = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown"]
    d = x.shape[-1]
    for j in range(poses):
        xj = module.eval_poses(x, 555 + j, 0)
        can, caps = module.capsules(xj)
        owner = caps.A.argmax(1).cpu()
        for i in range(n):
            a = axes[i, j]
            a.scatter(xj[i, :, 0].cpu(), xj[i, :, 1].cpu(), s=2, c=colours(owner[i].numpy()))
            axes[i, poses].scatter(can[i, :, 0].cpu(), can[i, :, 1].cpu(), s=2, alpha=0.6, color=pose_colours[j])
        if j == 0:
            recon = module.net.decoder(caps.mu, caps.beta, split=True).cpu()  # [B, K, M, d]
            for i in range(n):
                for k in range(K):
                    axes[i, poses + 1].scatter(recon[i, k, :, 0], recon[i, k, :, 1], s=2, color=colours(k))
    for a in axes.flat:
        a.set_aspect("equal"), a.set_xticks([]), a.set_yticks([])
        a.set_xlim(-1.4, 1.4), a.set_ylim(-1.4, 1.4)
    for j in range(poses):
        axes[0, j].set_title(f"pose {j + 1}, by capsule", fontsize=7)
    axes[0, poses].set_title("canonical, pose 1 blue 2 red\n3 green 4 purple", fontsize=7)
    axes[0, poses + 1].set_title("reconstruction", fontsize=7)
    view = "" if d == 2 else " (x-y projection)"
    return _save(fig, path, f"Canonical Capsules on test clouds{view}")


def analyse(module, datamodule, folder: Path | None) -> dict[str, Any]:
    datamodule.setup("test")
    test = features(module, datamodule.test_set, seed=1)
    metrics = {"instability/capsules": test["inst_caps"].mean().item(),
               "instability/pca": test["inst_pca"].mean().item(),
               "instability/capsules_median": test["inst_caps"].median().item(),
               "instability/pca_median": test["inst_pca"].median().item(),
               "capsules/used_mean": test["used"].mean().item()}
    tables = {}
    if hasattr(datamodule, "classes"):
        train = features(module, datamodule.train_set, seed=0)
        rows = []
        for kind in ("capsules", "pca", "raw", "upright"):
            metrics[f"svm/{kind}"] = linear_svm(train[kind], train["labels"], test[kind], test["labels"])
            rows.append(f"| {kind} | {metrics[f'svm/{kind}']:.3f} |")
        metrics["kmeans/capsules"] = matched_kmeans(train["capsules"], train["labels"], test["capsules"],
                                                    test["labels"], len(datamodule.classes))
        tables["Unsupervised classification (linear SVM, C = 0.1, on clouds in random poses)"] = "\n".join(
            ["| features | test accuracy |", "|---|---|", *rows,
             f"| capsules, K-means matched to classes | {metrics['kmeans/capsules']:.3f} |"])
    tables["Canonicalisation instability (Chamfer distance between the canonical clouds of two random poses)"] = (
        "| frame | mean | median |\n|---|---|---|\n"
        f"| learned (capsules) | {metrics['instability/capsules']:.4f} | {test['inst_caps'].median():.4f} |\n"
        f"| PCA | {metrics['instability/pca']:.4f} | {test['inst_pca'].median():.4f} |")
    out: dict[str, Any] = {"metrics": metrics, "tables": tables}
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out["figures"] = {"capsules.png": capsule_figure(module, datamodule.test_set, folder / "capsules.png")}
    return out
