"""Representation similarity (Kornblith, Norouzi, Lee & Hinton 2019): linear and RBF centred kernel
alignment (CKA), their debiased forms, and a torchmetrics CKA that accumulates minibatches exactly; and FID on a
zoo classifier's features, for generative models of small images; and the shape papers' measures (Chamfer
distance, F-score, occupancy IoU).

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K, L the centred Gram matrices of two
representations of the same n examples. Computed in float64.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["CKA", "cka", "center_gram", "gram_linear", "gram_rbf", "linear_cka", "linear_probe", "mean_squared_cca",
           "rbf_cka", "PenultimateFeatures", "zoo_fid", "fid_to_test_set", "chamfer_distance", "fscore",
           "nearest_distances", "occupancy_iou"]


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).to(torch.float64)


def _self_product(x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """x xᵀ (or xᵀ x), symmetric. On the CPU without autograd through NumPy, whose BLAS call for a matrix
    times its own transpose is a rank-k update (syrk) that computes one triangle: half the FLOPs of torch's
    general matmul, which is what bounds CKA at large n."""
    if x.device.type == "cpu" and not x.requires_grad:
        a = x.numpy()
        return torch.from_numpy(a.T.dot(a) if transpose else a.dot(a.T))
    return x.T @ x if transpose else x @ x.T


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    return _self_product(_f64(x))


def _order_statistics(flat: torch.Tensor, ranks: tuple[int, ...], sample: int = 1 << 16) -> list[torch.Tensor]:
    """The values of 1-based `ranks` (close together) in `flat`, exactly: a strided sample brackets them, and
    only the values inside the bracket are selected from (a few passes over the data instead of a selection
    over all of it); when the bracket misses, a selection over everything."""
    m = flat.numel()
    if m > 4 * sample:
        s = flat[:: m // sample].sort().values
        q, margin = ranks[0] * len(s) // m, 4 * int(len(s) ** 0.5)
        lo, hi = s[max(q - margin, 0)], s[min(q + margin, len(s) - 1)]
        below = int((flat < lo).sum())
        band = flat[(flat >= lo) & (flat <= hi)]
        if below < ranks[0] and ranks[-1] <= below + band.numel():
            return [band.kthvalue(r - below).values for r in ranks]
    return [flat.kthvalue(r).values for r in ranks]


def _median(values: torch.Tensor) -> torch.Tensor:
    """numpy's median (the mean of the two middle values for an even count), without quantile's size limit."""
    m = values.numel()
    mid = _order_statistics(values.flatten(), ((m + 1) // 2,) if m % 2 else (m // 2, m // 2 + 1))
    return mid[0] if m % 2 else (mid[0] + mid[1]) / 2


def gram_rbf(x: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """exp(−d²_ij / (2σ²)) with σ = threshold × the median pairwise distance (the official notebook takes the
    median of all n² squared distances, the zero diagonal included). In place after the distances, with the
    same roundings as the out-of-place formula (2·dot is exact, and dividing by −c negates exactly)."""
    dot = gram_linear(x)
    sq_norms = dot.diagonal()
    sq_dist = (sq_norms[:, None] + sq_norms[None, :]).sub_(dot, alpha=2)
    return sq_dist.div_(-2 * threshold**2 * _median(sq_dist)).exp_()


def center_gram(gram: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Double centring H K H; `unbiased` gives the U-statistic form of Song et al. (2012) behind debiased HSIC
    (zero diagonal, means over n−2 with the grand-mean correction)."""
    return _center_(gram.clone(), unbiased)


def _center_(gram: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """center_gram in place (for Gram matrices nobody else holds)."""
    n = gram.shape[0]
    if unbiased:
        gram.fill_diagonal_(0)
        means = gram.sum(0) / (n - 2)
        means = means - means.sum() / (2 * (n - 1))
    else:
        means = gram.mean(0)
        means = means - means.mean() / 2
    gram.sub_(means[:, None]).sub_(means[None, :])
    if unbiased:
        gram.fill_diagonal_(0)
    return gram


def _cosine(kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """⟨K_x, K_y⟩_F / (‖K_x‖_F ‖K_y‖_F) of two centred Gram matrices (a dot product, no n x n temporary)."""
    return torch.dot(kx.flatten(), ky.flatten()) / (kx.norm() * ky.norm())


def cka(gram_x: torch.Tensor, gram_y: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """CKA from two Gram matrices over the same examples."""
    return _cosine(center_gram(gram_x, debiased), center_gram(gram_y, debiased))


def _centred_products(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """x and y with each feature centred, and (YᵀX, XᵀX, YᵀY) of the centred features. On the CPU all three
    are blocks of one symmetric product [X Y]ᵀ[X Y] (one syrk: the same FLOPs as three products of which two
    are syrk, in one BLAS call), and x, y are views into one buffer centred in place."""
    p = x.shape[1]
    if x.device.type == "cpu" and not (x.requires_grad or y.requires_grad):
        z = torch.cat([x, y], 1)
        z -= z.mean(0)
        g = _self_product(z, transpose=True)
        return z[:, :p], z[:, p:], (g[p:, :p], g[:p, :p], g[p:, p:])
    x, y = x - x.mean(0), y - y.mean(0)
    return x, y, (y.T @ x, x.T @ x, y.T @ y)


def _products_centred_after(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """(YᵀX, XᵀX, YᵀY) of the centred features without centred copies: the products of x and y as they are
    (NumPy's BLAS: one gemm, two syrk), minus n·μ_y μ_xᵀ and the like. Subtracting the means after the product
    loses about μ²/σ² of float64's precision, so when a feature's mean is over 100 of its standard deviations
    this returns None and the caller centres first. On the CPU without autograd only."""
    if x.device.type != "cpu" or x.requires_grad or y.requires_grad:
        return None
    n = x.shape[0]
    a, b = x.numpy(), y.numpy()
    xx, yy, yx = torch.from_numpy(a.T.dot(a)), torch.from_numpy(b.T.dot(b)), torch.from_numpy(b.T.dot(a))
    mx, my = x.mean(0), y.mean(0)
    for gram, m in ((xx, mx), (yy, my)):
        var = gram.diagonal() / n - m * m
        if bool((m * m > 1e4 * var.clamp_min(0)).any()):  # zero-mean features (dead units) never trigger it
            return None
    xx.sub_(torch.outer(mx, mx), alpha=n)
    yy.sub_(torch.outer(my, my), alpha=n)
    yx.sub_(torch.outer(my, mx), alpha=n)
    return yx, xx, yy


def linear_cka(x: torch.Tensor, y: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """Linear CKA of representations x [n, p] and y [n, q] (rows: the same examples), in feature space:
    ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) after centring each feature — O(n·(p + q)²) instead of O(n²·(p + q)); with
    fewer examples than features (n < p + q) the Gram-matrix form is the cheaper one and is used instead."""
    x, y = _f64(x), _f64(y)
    if x.shape[0] < x.shape[1] + y.shape[1]:
        return cka(gram_linear(x), gram_linear(y), debiased)
    products = None if debiased else _products_centred_after(x, y)  # debiasing needs the centred rows too
    if products is None:
        x, y, products = _centred_products(x, y)
    yx, xx, yy = products
    xy, xx, yy = yx.pow(2).sum(), xx.pow(2).sum(), yy.pow(2).sum()
    if debiased:
        n = x.shape[0]
        rx, ry = x.pow(2).sum(1), y.pow(2).sum(1)

        def unbiased(dot: torch.Tensor, ra: torch.Tensor, rb: torch.Tensor) -> torch.Tensor:
            return dot - n / (n - 2) * (ra @ rb) + ra.sum() * rb.sum() / ((n - 1) * (n - 2))

        xy, xx, yy = unbiased(xy, rx, ry), unbiased(xx, rx, rx), unbiased(yy, ry, ry)
    return xy / (xx.sqrt() * yy.sqrt())


def rbf_cka(x: torch.Tensor, y: torch.Tensor, threshold: float = 0.5, debiased: bool = False) -> torch.Tensor:
    """RBF-kernel CKA; the bandwidth is `threshold` times the median pairwise distance of each representation."""
    return _cosine(_center_(gram_rbf(x, threshold), debiased), _center_(gram_rbf(y, threshold), debiased))


def mean_squared_cca(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """R²_CCA, the mean squared canonical correlation the paper compares CKA with: ‖Q_xᵀ Q_y‖²_F / min(p, q)
    with Q the orthonormal bases (reduced QR) of x [n, p] and y [n, q]. Like the official notebook, it does
    not centre: centre the features first for the textbook definition."""
    qx, qy = torch.linalg.qr(_f64(x))[0], torch.linalg.qr(_f64(y))[0]
    return (qx.T @ qy).pow(2).sum() / min(qx.shape[1], qy.shape[1])


class CKA(Metric):
    """Linear CKA over a whole dataset, accumulated minibatch by minibatch and exact: it keeps the sums
    Σx, Σy, XᵀY, XᵀX, YᵀY (summed across processes under DDP), from which the centred cross-covariances
    and hence ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) follow. Memory is O((p + q)²), independent of n."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, dim_x: int, dim_y: int, **kwargs):
        super().__init__(**kwargs)
        f64 = dict(dtype=torch.float64)
        self.add_state("n", torch.zeros((), **f64), dist_reduce_fx="sum")
        self.add_state("sx", torch.zeros(dim_x, **f64), dist_reduce_fx="sum")
        self.add_state("sy", torch.zeros(dim_y, **f64), dist_reduce_fx="sum")
        self.add_state("xy", torch.zeros(dim_x, dim_y, **f64), dist_reduce_fx="sum")
        self.add_state("xx", torch.zeros(dim_x, dim_x, **f64), dist_reduce_fx="sum")
        self.add_state("yy", torch.zeros(dim_y, dim_y, **f64), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = _f64(x), _f64(y)
        self.n += x.shape[0]
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xy += x.T @ y
        self.xx += x.T @ x
        self.yy += y.T @ y

    def compute(self) -> torch.Tensor:
        mx, my = self.sx / self.n, self.sy / self.n
        cxy = self.xy - self.n * torch.outer(mx, my)
        cxx = self.xx - self.n * torch.outer(mx, mx)
        cyy = self.yy - self.n * torch.outer(my, my)
        return cxy.pow(2).sum() / (cxx.norm() * cyy.norm())


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int,
                 l2: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2), steps: int = 100) -> dict[str, float]:
    """Linear evaluation of frozen features: L2-regularised multinomial logistic regression fitted with L-BFGS on the
    training features for each weight decay in `l2`, the one with the best validation accuracy scored on the
    test features (the protocol of the SimCLR paper's linear transfer experiments, in its appendix). Features
    are standardised with the training rows' mean and deviation first, which keeps the classifier linear in
    them. Returns val/test accuracy and the chosen l2."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs = [((x - mean) / std).double() for x in (train_x, val_x, test_x)]
    best: dict[str, float] = {"val_acc": -1.0}
    for wd in l2:
        w = torch.zeros(xs[0].shape[1], num_classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xs[0] @ w + b, train_y) + 0.5 * wd * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            val_acc, test_acc = ((x @ w + b).argmax(1).eq(y).double().mean().item()
                                 for x, y in ((xs[1], val_y), (xs[2], test_y)))
        if val_acc > best["val_acc"]:
            best = {"val_acc": val_acc, "test_acc": test_acc, "l2": wd}
    return best


class PenultimateFeatures(torch.nn.Module):
    """A frozen zoo classifier as an FID feature extractor: the input of its head (the penultimate layer)."""

    def __init__(self, classifier: torch.nn.Module):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        head = classifier.get_submodule(type(classifier).head_keys[0].removesuffix(".*"))
        self.num_features = head.in_features
        self._out: list[torch.Tensor] = []
        head.register_forward_hook(lambda mod, args, out: self._out.append(args[0]))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._out.clear()
        self.classifier(x)
        return self._out.pop().flatten(1).float()


def zoo_fid(classifier: str):
    """torchmetrics' FID on the penultimate features of a zoo classifier (catalogue name or release folder;
    inputs in [0, 1]); the real statistics are kept across `reset()`. Not comparable with Inception FIDs."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    import zoo

    return FrechetInceptionDistance(feature=PenultimateFeatures(zoo.load(classifier)), normalize=True,
                                    reset_real_features=False)


def fid_to_test_set(classifier: str, datamodule, samples: dict[str, torch.Tensor], n: int) -> dict[str, float]:
    """`zoo_fid` of the first n images of each sample set [N, C, H, W] in [0, 1] against the DataModule's whole
    test split, and of its first n validation images under the name "real_heldout": the floor for n images."""
    datamodule.setup("test")
    fid = zoo_fid(classifier)
    real = datamodule.test_set
    for start in range(0, len(real), 1000):
        fid.update(real.__getitems__(list(range(start, min(start + 1000, len(real)))))[0], real=True)
    held = datamodule.val_set.__getitems__(list(range(min(len(datamodule.val_set), n))))[0]
    out = {}
    for name, x in [*samples.items(), ("real_heldout", held)]:
        fid.reset()
        for part in x[:n].split(1000):
            fid.update(part, real=False)
        out[name] = float(fid.compute())
        print(f"analyse: FID (zoo classifier features) of {name}: {out[name]:.2f}", flush=True)
    return out


# ---------------------------------------------------------------- shapes (point sets and occupancy)
def nearest_distances(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Distance [..., n] from each point of a [..., n, d] to its nearest point of b [..., m, d], exact: on the CPU
    without gradients by scipy's KD-tree (n log m, 30x faster than brute force at 4,096 points), otherwise by
    differences (not the matrix-product expansion, which loses digits near zero), `chunk` points of a at a time.
    An empty set has no nearest points: a ValueError, not a silent NaN or infinity."""
    if a.shape[-2] == 0 or b.shape[-2] == 0:
        raise ValueError(f"an empty point cloud ({a.shape[-2]} and {b.shape[-2]} points): the distance to the nearest "
                         "point needs points on both sides (did a reconstruction come out empty?)")
    if a.device.type == "cpu" and not (a.requires_grad or b.requires_grad):
        from scipy.spatial import cKDTree

        lead = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        aa = a.expand(*lead, *a.shape[-2:]).reshape(-1, *a.shape[-2:]).double().numpy()
        bb = b.expand(*lead, *b.shape[-2:]).reshape(-1, *b.shape[-2:]).double().numpy()
        d = [torch.from_numpy(cKDTree(y).query(x)[0]) for x, y in zip(aa, bb)]
        return torch.stack(d).to(a.dtype).reshape(*lead, a.shape[-2]) if d else a.new_zeros(*lead, a.shape[-2])
    return torch.cat([torch.cdist(part, b, compute_mode="donot_use_mm_for_euclid_dist").amin(-1)
                      for part in a.split(chunk, dim=-2)], -1)


def chamfer_distance(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Symmetric Chamfer distance [...] of point sets [..., n, d] and [..., m, d]: the mean squared distance from
    each set to the nearest point of the other, summed over both directions (the official CvxNet and OccNet
    evaluation; their tables scale it by 100 or 10)."""
    return nearest_distances(pred, truth).square().mean(-1) + nearest_distances(truth, pred).square().mean(-1)


def fscore(pred: torch.Tensor, truth: torch.Tensor, tau: float = 0.01) -> torch.Tensor:
    """F-score [...] in [0, 1] at distance `tau`: the harmonic mean of precision (predicted points within tau of
    the truth) and recall (true points within tau of the prediction). CvxNet's evaluation uses tau = 0.01 (squared
    distance 1e-4) on shapes in the unit box."""
    precision = (nearest_distances(pred, truth) <= tau).float().mean(-1)
    recall = (nearest_distances(truth, pred) <= tau).float().mean(-1)
    return 2 * precision * recall / (precision + recall).clamp_min(1e-9)


def occupancy_iou(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """IoU [...] of two occupancies sampled at the same points, bool or {0, 1} [..., n]: |A ∩ B| / |A ∪ B| (1 when
    both are empty)."""
    a, b = pred.bool(), truth.bool()
    union = (a | b).sum(-1)
    return torch.where(union > 0, (a & b).sum(-1) / union.clamp_min(1), torch.ones_like(union, dtype=torch.float))


class KeypointAP(Metric):
    """COCO keypoint AP (object keypoint similarity, `pycocotools` COCOeval with iouType "keypoints") with the given
    per-keypoint OKS constants: AP averaged over OKS thresholds 0.50:0.95, and at 0.50 and 0.75.

    `update(points, scores, targets, image_size)` takes one predicted object per target (Pix2seq v2's keypoint
    examples, each an annotated object's crop): points [B, K, 2] normalised y, x in the padded input, their scores
    [B], and the targets of `zoo.data.coco.COCOInstances` (their one object's keypoints, box, area and image id); the
    image's annotated objects are the examples with its id. With `whole_images=True` it takes whole images (the
    official evaluation on detected boxes): per image any number of predicted objects (a list of [n, K, 2] x, y
    pixels of the original image and a list of scores [n]) and every annotated object of the target
    (`zoo.data.coco.COCODetection` with keypoints), crowds as crowd regions. Either way each prediction is matched
    among its image's annotations, and annotated keypoints marked unlabelled count as unlabelled (v = 0), as COCO's
    evaluation treats them."""

    full_state_update = False

    def __init__(self, sigmas: list[float], **kwargs):
        super().__init__(**kwargs)
        self.sigmas = list(sigmas)
        for name in ("images", "pred_ids", "pred", "scores", "gt_ids", "truth", "boxes", "areas", "crowd"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def _add_truth(self, target: dict, index: torch.Tensor, image_size: int) -> None:
        """The target's annotated objects `index` as ground truth (unlabelled points, negative, as v = 0)."""
        from zoo.data.coco import boxes_to_pixels, points_to_pixels

        image_id = target["image_id"]
        truth = points_to_pixels(target["keypoints"][index], target, image_size)  # [n, K, 2]
        seen = (truth >= 0).all(-1, keepdim=True)
        xyxy = boxes_to_pixels(target["boxes"][index], target, image_size)
        n = len(truth)
        self.gt_ids.append(image_id.reshape(1).expand(n).to(self.device))
        self.truth.append(torch.cat([truth * seen, seen * 2.0], -1).float().to(self.device))
        self.boxes.append(torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1).float().to(self.device))
        self.areas.append(target["area"][index].float().to(self.device))
        self.crowd.append(target["iscrowd"][index].bool().to(self.device))

    def update(self, points, scores, targets: list[dict], image_size: int, whole_images: bool = False) -> None:
        from zoo.data.coco import points_to_pixels

        for p, s, t in zip(points, scores, targets):
            self.images.append(t["image_id"].reshape(1).to(self.device))
            if whole_images:  # any number of predictions, every annotated object
                n, index = len(p), torch.arange(len(t["keypoints"]))
                p = p.reshape(n, len(self.sigmas), 2)
            else:  # one prediction, the example's one object
                n, index = 1, torch.tensor([0])
                p = points_to_pixels(p.flatten(), t, image_size)[None]
            self.pred_ids.append(t["image_id"].reshape(1).expand(n).to(self.device))
            self.pred.append(p.float().to(self.device))
            self.scores.append(s.reshape(n).float().to(self.device))
            self._add_truth(t, index, image_size)

    def compute(self) -> dict[str, float]:
        import contextlib
        import io

        import numpy as np
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        def cat(name):
            x = getattr(self, name)
            return (torch.cat(x) if isinstance(x, list) else x).cpu()

        images, ids, pred, scores, gt_ids, truth, boxes, areas, crowd = (cat(k) for k in (
            "images", "pred_ids", "pred", "scores", "gt_ids", "truth", "boxes", "areas", "crowd"))
        if not len(images):
            return {"map": -1.0, "map_50": -1.0, "map_75": -1.0}
        k = len(self.sigmas)
        gt = COCO()
        gt.dataset = {"images": [{"id": int(i)} for i in images.unique()],
                      "categories": [{"id": 1, "name": "object", "keypoints": [str(j) for j in range(k)]}],
                      "annotations": [{"id": n + 1, "image_id": int(i), "category_id": 1, "iscrowd": int(c),
                                       "keypoints": t.flatten().tolist(), "num_keypoints": int((t[:, 2] > 0).sum()),
                                       "bbox": b.tolist(), "area": float(a)}
                                      for n, (i, t, b, a, c) in enumerate(zip(gt_ids, truth, boxes, areas, crowd))]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            dt = gt.loadRes([{"image_id": int(i), "category_id": 1, "score": float(s),
                              "keypoints": torch.cat([p, torch.ones(k, 1)], -1).flatten().tolist()}
                             for i, p, s in zip(ids, pred, scores)]) if len(ids) else COCO()
            ev = COCOeval(gt, dt, "keypoints")
            ev.params.kpt_oks_sigmas = np.array(self.sigmas)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return {"map": float(ev.stats[0]), "map_50": float(ev.stats[1]), "map_75": float(ev.stats[2])}


class PanopticQuality(Metric):
    """Panoptic quality (Kirillov et al. 2019) as the reference panopticapi `pq_compute` counts it, over maps
    [H, W, 2] of (category id, instance id) per pixel, category 0 void.

    A predicted and an annotated segment of one category match when their IoU exceeds 0.5, the union leaving out
    the prediction's overlap with annotated void. Unmatched annotated segments are false negatives; unmatched
    predicted segments are false positives unless more than half of them lies on annotated void. Predicted void
    pixels are simply unlabelled. (torchmetrics' PanopticQuality also drops annotated segments that lie mostly on
    *predicted* void from the false negatives, so a model that predicts void everywhere is not scored 0 there.)
    PQ, SQ and RQ average over the categories with a segment in either map; `compute` returns
    {pq, sq, rq, pq_things, pq_stuff}.
    """

    full_state_update = False

    def __init__(self, things: list[int], stuffs: list[int], **kwargs):
        super().__init__(**kwargs)
        if set(things) & set(stuffs) or 0 in set(things) | set(stuffs):
            raise ValueError("things and stuffs must be disjoint category ids, none of them 0 (void)")
        self.things, self.stuffs = sorted(things), sorted(stuffs)
        n = max([*things, *stuffs]) + 1
        for name in ("iou", "tp", "fp", "fn"):
            self.add_state(name, torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: [H, W, 2] (one image) or [B, H, W, 2] long."""
        if pred.dim() == 3:
            pred, target = pred[None], target[None]
        n = self.tp.shape[0]
        known = torch.zeros(n + 1, dtype=torch.bool, device=pred.device)
        known[[*self.things, *self.stuffs]] = True
        for p, t in zip(pred.long(), target.long()):
            p_cat, t_cat = p[..., 0].clamp(0, n), t[..., 0].clamp(0, n)
            p_cat = torch.where(known[p_cat], p_cat, 0)
            t_cat = torch.where(known[t_cat], t_cat, 0)
            p_inst = torch.where(torch.isin(p_cat, torch.tensor(self.stuffs, device=p.device)), 0, p[..., 1])
            t_inst = torch.where(torch.isin(t_cat, torch.tensor(self.stuffs, device=t.device)), 0, t[..., 1])
            self._image(p_cat.flatten(), p_inst.flatten(), t_cat.flatten(), t_inst.flatten())

    def _image(self, p_cat, p_inst, t_cat, t_inst) -> None:
        _, p_seg = torch.unique(torch.stack([p_cat, p_inst]), dim=1, return_inverse=True)
        _, t_seg = torch.unique(torch.stack([t_cat, t_inst]), dim=1, return_inverse=True)
        n_p, n_t = int(p_seg.max()) + 1, int(t_seg.max()) + 1
        p_area = torch.bincount(p_seg, minlength=n_p).double()
        t_area = torch.bincount(t_seg, minlength=n_t).double()
        inter = torch.bincount(p_seg * n_t + t_seg, minlength=n_p * n_t).view(n_p, n_t).double()
        p_class = torch.zeros(n_p, dtype=torch.long, device=p_cat.device).scatter_(0, p_seg, p_cat)
        t_class = torch.zeros(n_t, dtype=torch.long, device=t_cat.device).scatter_(0, t_seg, t_cat)
        on_void = inter[:, t_class == 0].sum(1)  # each prediction's pixels on annotated void
        union = p_area[:, None] + t_area[None] - inter - on_void[:, None]
        iou = inter / union.clamp(min=1)
        same = (p_class[:, None] == t_class[None]) & (p_class[:, None] > 0)
        match = same & (iou > 0.5)  # at most one per row and column (IoU > 0.5)
        cls = t_class[match.nonzero()[:, 1]]
        self.tp.index_add_(0, cls, torch.ones_like(cls, dtype=torch.float64))
        self.iou.index_add_(0, cls, iou[match])
        fn = (t_class > 0) & ~match.any(0)
        self.fn.index_add_(0, t_class[fn], torch.ones(int(fn.sum()), dtype=torch.float64, device=fn.device))
        fp = (p_class > 0) & ~match.any(1) & (on_void / p_area <= 0.5)
        self.fp.index_add_(0, p_class[fp], torch.ones(int(fp.sum()), dtype=torch.float64, device=fp.device))

    def compute(self) -> dict[str, torch.Tensor]:
        seen = (self.tp + self.fp + self.fn) > 0
        sq = torch.where(self.tp > 0, self.iou / self.tp.clamp(min=1), 0.0)
        rq = torch.where(seen, self.tp / (self.tp + 0.5 * self.fp + 0.5 * self.fn).clamp(min=1e-12), 0.0)
        pq = sq * rq

        def mean(x: torch.Tensor, ids: list[int]) -> torch.Tensor:
            keep = torch.zeros_like(seen)
            keep[ids] = True
            keep &= seen
            return x[keep].mean() if keep.any() else x.new_tensor(0.0)

        every = [*self.things, *self.stuffs]
        return {"pq": mean(pq, every), "sq": mean(sq, every), "rq": mean(rq, every),
                "pq_things": mean(pq, self.things), "pq_stuff": mean(pq, self.stuffs)}
