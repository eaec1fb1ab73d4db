"""White-box L∞ attacks, reconstruction-based detectors of adversarial images and their measures, shared by
DARCCC (Frosst, Sabour & Hinton 2018), "Detecting and Diagnosing Adversarial Images with Class-Conditional
Capsule Reconstructions" (Qin et al., ICLR 2020) and "Deflecting Adversarial Attacks" (Qin et al. 2020).

A model here is any module with
    `scores_and_reconstruction(x, y=None) -> (scores [B, K], recon [B, C, H, W] in [0, 1])`, differentiable in x,
        the reconstruction conditioned on class y when given, else on the predicted class;
    `class_loss(scores, y) -> [B]`, the per-example loss an attacker pushes up (or, towards a target, down);
        `cw_margin` (below) is the same function of capsule lengths and of logits, so attacks on both compare;
    a buffer `detection_threshold` (the DARCCC threshold, stored with the checkpoint; NaN until fitted).

Attacks. One projected signed-gradient routine (`projected_gradient`) descends a per-example objective inside
the L∞ ball of radius ε around x intersected with [0, 1]; the attacks differ only in schedule and objective:
FGSM (one step of size ε), BIM (steps from x), PGD (steps from a uniform random start in the ball), the
reconstructive attack of Qin et al. (2020, after DARCCC's R-BIM: the class loss plus α‖x' − r(x')‖₂, so the
global detector misses the result) and the defence-aware attack of "Deflecting" (the class loss plus weighted
global, local and cycle-consistency detector terms). Targeted attacks descend class_loss(f(x'), t) with the
reconstruction conditioned on t; untargeted ones ascend class_loss(f(x'), y). The attacks are our own code
because the maintained PyTorch attack libraries cannot take these objectives: torchattacks hard-codes
cross-entropy on the logits (and pins requests~=2.25), and the Adversarial Robustness Toolbox's loss sees only
the classifier's output, never the input and its reconstruction, and steps through NumPy.

Detectors (each `score(model, x) -> [B]`, flagged above a threshold at the 95th percentile of clean validation
scores, i.e. 5% false positives, the DARCCC convention): the global reconstruction error ‖x − r(x)‖₂ (DARCCC),
the local reconstruction error (the largest L2 error over patch × patch windows; patch = 1 is the largest pixel
error) and cycle consistency (the class loss of the reconstruction r(x) against the class predicted for x: the
reconstruction of a clean image is classified as the image was). The "Deflecting" defence flags an input when
any of the three does; three detectors at 5% each flag about 12% of clean images together, so the union gets
its own thresholds (`fit_union`), calibrated jointly so that it flags 5% of the clean validation images.

Measures per attack: success rate (targeted: classified as the target; untargeted: misclassified), detection
rate (successful adversarial images that are flagged), undetected success rate (successful and not flagged,
over all attacked images), AUROC of the detector score, clean against adversarial, and deflection ("Deflecting"):
of the successful, undetected adversarial images, the fraction that a separately trained clean classifier (the
judge) assigns to the attack's class, i.e. images that really look like the target now.

Settings the papers' text leaves to us (the stored copies read here give no more than their abstracts): attacks
are made on the test images the model classifies correctly, targeted to a class drawn uniformly from the other
K − 1; step size 2.5ε / steps (Madry et al.'s rule); the class loss (the models' `attack_loss`); the
detector-term weights (swept, the strongest kept).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ATTACKS", "AttackSpec", "attack", "attack_objective", "projected_gradient", "fgsm", "bim", "pgd",
    "reconstructive", "defence_aware", "cw_margin", "global_error", "local_error", "Detector",
    "GlobalReconstruction", "LocalReconstruction", "CycleConsistency", "fit_threshold", "fit_union", "flag_union",
    "attack_success", "detection_rates",
    "deflection_rate", "detection_auroc", "random_targets", "detection_report",
]

Objective = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------------ attacks
def projected_gradient(objective: Objective, x: torch.Tensor, *, eps: float, steps: int, step_size: float,
                       random_start: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Minimise `objective(x') -> [B]` over {x' : ‖x' − x‖∞ ≤ eps, 0 ≤ x' ≤ 1} by `steps` signed-gradient steps
    x' ← Π(x' − step_size · sign ∇objective), starting at x or (random_start) at a uniform point of the ball.
    Each example's objective depends on that example only, so the summed gradient is the per-example one."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()  # a normal tensor even when the caller runs under inference mode
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        adv = x.clone()
        if random_start:
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            adv = torch.min(torch.max(x + eps * (2 * noise - 1), lo), hi)
        for _ in range(steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(adv).sum(), adv)
            adv = torch.min(torch.max(adv.detach() - step_size * grad.sign(), lo), hi)
    return adv.detach()


def cw_margin(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini & Wagner's margin, max over j ≠ y of s_j minus s_y, per example [B]: negative while y wins. The
    same function of the class scores for every model (capsule lengths or logits), unlike cross-entropy over
    10 lengths in [0, 1], which cannot leave [log(1 + 9/e), log(1 + 9e)] ≈ [1.46, 3.24]."""
    own = scores.gather(1, y[:, None]).squeeze(1)
    others = scores.masked_fill(F.one_hot(y, scores.shape[1]).bool(), -math.inf)
    return others.amax(1) - own


@dataclass(frozen=True)
class AttackSpec:
    """An attack as a schedule and an objective: class loss + recon·global + local·local + cycle·cycle error.
    `steps` and `targeted`, when set, override the report's (e.g. a 40-step or an untargeted PGD)."""

    single_step: bool = False
    random_start: bool = False
    recon: float = 0.0
    local: float = 0.0
    cycle: float = 0.0
    steps: int | None = None
    targeted: bool | None = None

    @property
    def aims_at_detectors(self) -> bool:
        return bool(self.recon or self.local or self.cycle)


ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec(single_step=True),
    "bim": AttackSpec(),
    "pgd": AttackSpec(random_start=True),
    "pgd_40": AttackSpec(random_start=True, steps=40),
    "pgd_untargeted": AttackSpec(random_start=True, targeted=False),
    "pgd_40_untargeted": AttackSpec(random_start=True, steps=40, targeted=False),
    "reconstructive": AttackSpec(recon=1.0),
    "reconstructive_40": AttackSpec(recon=1.0, steps=40),
    "defence_aware": AttackSpec(recon=1.0, local=1.0, cycle=1.0),
    "defence_aware_40": AttackSpec(recon=1.0, local=1.0, cycle=1.0, steps=40),
}


def attack_objective(model: nn.Module, y: torch.Tensor, target: torch.Tensor | None = None, *, recon: float = 0.0,
                     local: float = 0.0, cycle: float = 0.0, patch: int = 4) -> Objective:
    """The per-example loss an attacker descends. Targeted: class_loss(f(x'), t), reconstruction conditioned on t;
    untargeted: −class_loss(f(x'), y), reconstruction of the predicted class. Detector terms, weighted: the global
    and local reconstruction errors of x', and the class loss of f(r(x')) against the class x' should take
    (cycle consistency), so the detectors of "Deflecting" miss x'."""

    def objective(adv: torch.Tensor) -> torch.Tensor:
        scores, rec = model.scores_and_reconstruction(adv, target)
        loss = model.class_loss(scores, target) if target is not None else -model.class_loss(scores, y)
        if recon:
            loss = loss + recon * global_error(adv, rec)
        if local:
            loss = loss + local * local_error(adv, rec, patch)
        if cycle:
            goal = target if target is not None else scores.argmax(1).detach()
            loss = loss + cycle * model.class_loss(model.scores_and_reconstruction(rec)[0], goal)
        return loss

    return objective


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str = "pgd", *,
           target: torch.Tensor | None = None, eps: float = 0.1, steps: int = 10, step_size: float | None = None,
           generator: torch.Generator | None = None, patch: int = 4, **weights: float) -> torch.Tensor:
    """Adversarial images for x (labels y) by the attack `name` of ATTACKS, targeted when `target` is given.
    `steps` is the attack's own when it fixes one; `step_size` defaults to 2.5·eps/steps; `weights` (recon,
    local, cycle) override the spec's detector terms."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    spec = replace(ATTACKS[name], **weights)
    steps = spec.steps or steps
    if spec.single_step:
        steps, step_size = 1, eps
    objective = attack_objective(model, y, target, recon=spec.recon, local=spec.local, cycle=spec.cycle, patch=patch)
    return projected_gradient(objective, x, eps=eps, steps=steps, step_size=step_size or 2.5 * eps / steps,
                              random_start=spec.random_start, generator=generator)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
         target: torch.Tensor | None = None) -> torch.Tensor:
    """Goodfellow et al. (2015): x ± ε·sign ∇x class_loss, clamped to [0, 1]."""
    return attack(model, x, y, "fgsm", target=target, eps=eps)


def bim(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, target: torch.Tensor | None = None,
        steps: int = 10, step_size: float | None = None) -> torch.Tensor:
    """Kurakin et al. (2017): iterated FGSM steps from x, projected on the ε-ball."""
    return attack(model, x, y, "bim", target=target, eps=eps, steps=steps, step_size=step_size)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, target: torch.Tensor | None = None,
        steps: int = 10, step_size: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Madry et al. (2018): BIM from a uniform random start in the ε-ball."""
    return attack(model, x, y, "pgd", target=target, eps=eps, steps=steps, step_size=step_size, generator=generator)


def reconstructive(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, target: torch.Tensor | None = None,
                   steps: int = 10, step_size: float | None = None, recon: float = 1.0) -> torch.Tensor:
    """Qin et al. (2020)'s reconstructive attack: the class loss plus recon·‖x' − r(x')‖₂."""
    return attack(model, x, y, "reconstructive", target=target, eps=eps, steps=steps, step_size=step_size, recon=recon)


def defence_aware(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, target: torch.Tensor | None = None,
                  steps: int = 10, step_size: float | None = None, recon: float = 1.0, local: float = 1.0,
                  cycle: float = 1.0, patch: int = 4) -> torch.Tensor:
    """"Deflecting"'s defence-aware attack: the class loss plus the three detectors' terms."""
    return attack(model, x, y, "defence_aware", target=target, eps=eps, steps=steps, step_size=step_size,
                  patch=patch, recon=recon, local=local, cycle=cycle)


# ---------------------------------------------------------------------------------------------- detectors
def global_error(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """‖x − r(x)‖₂ per example (DARCCC)."""
    return (x - recon).flatten(1).norm(dim=1)


def local_error(x: torch.Tensor, recon: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """The largest L2 reconstruction error over all patch × patch windows (stride 1, channels summed)."""
    sq = (x - recon).pow(2).sum(1, keepdim=True)
    window = F.avg_pool2d(sq, patch, stride=1) * patch**2
    return window.flatten(1).amax(1).clamp_min(0).sqrt()


class Detector:
    """A score that grows as x looks adversarial; `fit` puts the threshold at the (1 − fpr) quantile of clean
    validation scores, and `flag` marks scores above it."""

    name = ""

    def __init__(self, threshold: float = math.nan):
        self.threshold = threshold

    def score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        scores, recon = model.scores_and_reconstruction(x)
        return self.score_outputs(model, x, scores, recon)

    def score_outputs(self, model: nn.Module, x: torch.Tensor, scores: torch.Tensor,
                      recon: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, clean_scores: torch.Tensor, fpr: float = 0.05) -> float:
        self.threshold = float(torch.quantile(clean_scores.double(), 1 - fpr))
        return self.threshold

    def flag(self, scores: torch.Tensor) -> torch.Tensor:
        return scores > self.threshold


class GlobalReconstruction(Detector):
    """DARCCC: ‖x − r(x)‖₂ with r the reconstruction from the winning class."""

    name = "global"

    def score_outputs(self, model, x, scores, recon):
        return global_error(x, recon)


class LocalReconstruction(Detector):
    """"Deflecting": the reconstruction error of the worst patch, for perturbations concentrated in a small area."""

    name = "local"

    def __init__(self, threshold: float = math.nan, patch: int = 4):
        super().__init__(threshold)
        self.patch = patch

    def score_outputs(self, model, x, scores, recon):
        return local_error(x, recon, self.patch)


class CycleConsistency(Detector):
    """"Deflecting": the class loss of f(r(x)) against the class predicted for x; a clean image's reconstruction is
    classified as the image was, an adversarial image's often is not."""

    name = "cycle"

    def score_outputs(self, model, x, scores, recon):
        return model.class_loss(model.scores_and_reconstruction(recon)[0], scores.argmax(1))


def _detectors(patch: int) -> list[Detector]:
    return [GlobalReconstruction(), LocalReconstruction(patch=patch), CycleConsistency()]


@torch.no_grad()
def _predict_and_score(model: nn.Module, x: torch.Tensor,
                       detectors: list[Detector]) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes [B] and detector scores [D, B], from one reconstruction pass for all detectors."""
    scores, recon = model.scores_and_reconstruction(x)
    detected = torch.stack([d.score_outputs(model, x, scores, recon) for d in detectors])
    return scores.argmax(1).cpu(), detected.float().cpu()


def _score_batches(model: nn.Module, batches: Iterable[torch.Tensor], detectors: list[Detector]) -> torch.Tensor:
    """Detector scores [D, N] of every image."""
    device = _device(model)
    out = [_predict_and_score(model, x.to(device), detectors)[1] for x in batches]
    return torch.cat(out, 1) if out else torch.empty(len(detectors), 0)


def fit_threshold(model: nn.Module, val_loader: Iterable, fpr: float = 0.05) -> float:
    """DARCCC's threshold: the (1 − fpr) quantile of ‖x − r(x)‖₂ over the clean validation images, written into
    `model.detection_threshold` (so it is saved with the checkpoint) and returned."""
    detector = GlobalReconstruction()
    was_training = model.training
    model.eval()
    threshold = detector.fit(_score_batches(model, (b[0] for b in val_loader), [detector])[0], fpr)
    model.train(was_training)
    model.detection_threshold.fill_(threshold)
    return float(model.detection_threshold)


def fit_union(clean_scores: torch.Tensor, fpr: float = 0.05) -> torch.Tensor:
    """Thresholds [D] for "any of the D detectors fires", calibrated jointly on clean scores [D, N]: every
    detector at the same rank of its own clean scores, the lowest rank at which the union flags at most fpr·N
    clean images. An image is flagged when its highest rank over the detectors is above that rank, so the rank is
    the (⌊fpr·N⌋ + 1)-th largest of these highest ranks (ties between detectors can leave the rate up to D/N
    below fpr)."""
    d, n = clean_scores.shape
    ranks = clean_scores.argsort(1).argsort(1) + 1  # 1 = the lowest clean score of that detector
    highest = ranks.amax(0).sort(descending=True).values
    allowed = min(math.floor(fpr * n + 1e-9), n - 1)
    rank = int(highest[allowed])
    return clean_scores.sort(1).values[:, rank - 1]


def flag_union(scores: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """[B]: any detector's score [D, B] above its threshold [D]."""
    return (scores > thresholds.to(scores)[:, None]).any(0)


# ------------------------------------------------------------------------------------------------ measures
def attack_success(pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Targeted: classified as the target; untargeted: misclassified."""
    return pred == target if target is not None else pred != y


def _rate(mask: torch.Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else math.nan


def detection_rates(success: torch.Tensor, flagged: torch.Tensor) -> dict[str, float]:
    """success: attacked images that fool the model; detect: of those, flagged; undetected: successful and not
    flagged, over all attacked images."""
    return {"success": _rate(success), "detect": _rate(flagged[success]), "undetected": _rate(success & ~flagged)}


def deflection_rate(judge_pred: torch.Tensor, target: torch.Tensor, success: torch.Tensor,
                    flagged: torch.Tensor) -> float:
    """Of the successful, undetected adversarial images, the fraction the clean judge classifies as the target."""
    keep = success & ~flagged
    return _rate(judge_pred[keep] == target[keep])


def detection_auroc(clean_scores: torch.Tensor, adversarial_scores: torch.Tensor) -> float:
    """Area under the ROC of a detector score separating adversarial (positive) from clean images."""
    from torchmetrics.functional.classification import binary_auroc

    if not len(clean_scores) or not len(adversarial_scores):
        return math.nan
    scores = torch.cat([clean_scores, adversarial_scores]).float()
    labels = torch.cat([torch.zeros(len(clean_scores)), torch.ones(len(adversarial_scores))]).long()
    return float(binary_auroc(scores, labels))


def random_targets(y: torch.Tensor, num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A target for each label, uniform over the other num_classes − 1 classes."""
    shift = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)
    return (y + shift) % num_classes


# -------------------------------------------------------------------------------------------------- report
def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def _load_judge(judge: str | nn.Module | None) -> nn.Module | None:
    if isinstance(judge, str):
        import zoo

        judge = zoo.load(judge)
    return judge.eval() if judge is not None else None


def _images(loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*((b[0], b[1]) for b in loader))
    return torch.cat(xs), torch.cat(ys)


def _batched(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


DETECTOR_WEIGHTS = (0.1, 1.0, 10.0)


def detection_report(model: nn.Module, datamodule: Any, folder: str | Path, *, judge: str | nn.Module | None = None,
                     attacks: Iterable[str] = ("fgsm", "bim", "pgd", "pgd_40", "pgd_untargeted",
                                               "pgd_40_untargeted", "reconstructive", "reconstructive_40",
                                               "defence_aware"),
                     eps: float = 0.1, steps: int = 10, step_size: float | None = None,
                     detector_weights: Iterable[float] = DETECTOR_WEIGHTS, num_examples: int = 500,
                     targeted: bool = True, patch: int = 4, fpr: float = 0.05, batch_size: int = 250, seed: int = 0,
                     name: str | None = None) -> dict[str, Any]:
    """The detection experiment of the three papers, for `analyse()`.

    Fits the three detectors' thresholds on the clean validation images (each at `fpr`; the global one into
    `model.detection_threshold`) and, jointly, the thresholds of their union (`fit_union`, `fpr` for the union),
    takes `num_examples` test images (a seeded draw) and attacks those the model classifies correctly with every
    attack in `attacks` (targets drawn once, seeded, shared by all targeted attacks; an attack's own `steps` and
    `targeted` override the arguments). An attack with detector terms runs once per weight in
    `detector_weights` (its terms scaled by it) and is reported at the weight with the highest undetected success
    rate against the detectors it aims at (the global one for `reconstructive`, the union for `defence_aware`).
    `judge` (a catalogue name, a module returning logits, or None to skip) measures deflection. Writes
    reconstructions.png and detection_roc.png into `folder`. Returns {"metrics", "tables", "figures"}; metrics
    are flat (`threshold`, `clean_acc`, `fpr_any`, `pgd_success`, `pgd_detect`, `pgd_undetected`, `pgd_auroc`,
    `pgd_deflect`, `pgd_detect_local`, `pgd_detect_any`, `reconstructive_weight`, ...); a rate over an empty
    set (e.g. no successful attack) is left out.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    attacks, detector_weights = list(attacks), list(detector_weights)
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; known: {', '.join(ATTACKS)}")
    device, was_training = _device(model), model.training
    model.eval()
    judge_module = _load_judge(judge)
    detectors = _detectors(patch)
    if getattr(datamodule, "test_set", None) is None:
        datamodule.setup()

    val = _score_batches(model, (b[0] for b in datamodule.val_dataloader()), detectors)
    for d, s in zip(detectors, val):
        d.fit(s, fpr)
    model.detection_threshold.fill_(detectors[0].threshold)
    detectors[0].threshold = float(model.detection_threshold)  # flag exactly as the stored threshold does
    union = fit_union(val, fpr)
    separate = torch.stack([d.flag(s) for d, s in zip(detectors, val)]).any(0)

    test_x, test_y = _images(datamodule.test_dataloader())
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(test_y), generator=g)[:num_examples].sort().values
    x_all, y_all = test_x[pick], test_y[pick]
    slices = _batched(len(y_all), batch_size)
    with torch.no_grad():
        logits = torch.cat([model.scores_and_reconstruction(x_all[s].to(device))[0].cpu() for s in slices])
    correct = logits.argmax(1) == y_all
    x, y, num_classes = x_all[correct], y_all[correct], logits.shape[1]
    targets = random_targets(y, num_classes, g)
    clean = _score_batches(model, (x[s] for s in _batched(len(y), batch_size)), detectors)
    clean_acc = _rate(correct)

    metrics: dict[str, float] = {"clean_acc": clean_acc, "threshold": detectors[0].threshold,
                                 "threshold_local": detectors[1].threshold, "threshold_cycle": detectors[2].threshold,
                                 "fpr_any": _rate(flag_union(val, union)), "fpr_any_separate": _rate(separate),
                                 **{f"union_threshold_{d.name}": float(t) for d, t in zip(detectors, union)}}
    results, adversarial, sweep = {}, {}, {}
    for a in attacks:
        spec = ATTACKS[a]
        aimed_targeted = targeted if spec.targeted is None else spec.targeted
        target = targets if aimed_targeted else None
        runs = []
        for w in detector_weights if spec.aims_at_detectors else [None]:
            start = time.perf_counter()
            weights = {} if w is None else {"recon": spec.recon * w, "local": spec.local * w, "cycle": spec.cycle * w}
            adv_x, pred, adv_scores, judged = _attack_batches(model, x, y, target, a, judge_module, detectors,
                                                              eps=eps, steps=steps, step_size=step_size, seed=seed,
                                                              patch=patch, batch_size=batch_size, weights=weights)
            success = attack_success(pred, y, target)
            flags = torch.stack([d.flag(s) for d, s in zip(detectors, adv_scores)])
            any_flag = flag_union(adv_scores, union)
            r = _measures(detectors, clean, adv_scores, success, flags, any_flag, judged,
                          target if target is not None else pred)
            if w is not None:
                r["weight"] = w
            runs.append((r, (adv_x, adv_scores, success)))
            print(f"detection report: {a}{'' if w is None else f' (detector weight {w:g})'} on {len(y)} images in "
                  f"{time.perf_counter() - start:.1f}s: success {_fmt(r['success'])}, undetected success "
                  f"{_fmt(r['undetected'])} (global), {_fmt(r['undetected_any'])} (any of three)", flush=True)
        key = "undetected_any" if spec.local or spec.cycle else "undetected"
        best = max(range(len(runs)), key=lambda i: _or_zero(runs[i][0][key]))
        results[a], adversarial[a] = runs[best]
        if len(runs) > 1:
            sweep[a] = [r for r, _ in runs]
        metrics.update({f"{a}_{k}": v for k, v in results[a].items()})

    figures = {"reconstructions.png": _reconstruction_figure(model, x[:8], {a: adversarial[a][0][:8] for a in attacks},
                                                             folder / "reconstructions.png", eps),
               "detection_roc.png": _roc_figure(detectors, clean, adversarial, folder / "detection_roc.png", fpr)}
    model.train(was_training)
    label = name or getattr(model, "zoo_key", "") or type(model).__name__
    kind = "targeted unless named untargeted"
    setting = f"L∞ ε = {eps:g}, {steps} steps unless named _40, {len(y)} test images"
    tables = {f"Attacks and detection ({kind}, {setting}); the global detector at {fpr:.0%} false positives, the "
              f"union of the three calibrated jointly to {metrics['fpr_any']:.1%} on validation; ± is a 95% "
              f"binomial interval": _main_table(label, clean_acc, results, len(y), judge_module is not None),
              f"Detectors of 'Deflecting Adversarial Attacks': detection rate / AUROC, each detector at {fpr:.0%} "
              f"false positives, the union at {metrics['fpr_any']:.1%} ({kind}, L∞ ε = {eps:g})":
              _detector_table(results)}
    if sweep:
        tables["Detector-term weight sweep (the reported weight is the one with the highest undetected success "
               "against the detectors the attack aims at)"] = _sweep_table(sweep)
    return {"metrics": {k: float(v) for k, v in metrics.items() if not math.isnan(v)}, "tables": tables,
            "figures": figures}


def _or_zero(v: float) -> float:
    return -1.0 if math.isnan(v) else v


def _attack_batches(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, name: str,
                    judge: nn.Module | None, detectors: list[Detector], *, eps: float, steps: int,
                    step_size: float | None, seed: int, patch: int, batch_size: int, weights: dict[str, float]):
    """One attack on all images, batch by batch: (adversarial images, predictions, detector scores [D, N],
    judge predictions or None)."""
    device = _device(model)
    gen = torch.Generator().manual_seed(seed)
    adv, pred, scores, judged = [x[:0]], [y[:0]], [torch.empty(len(detectors), 0)], []
    for s in _batched(len(y), batch_size):
        xb, yb = x[s].to(device), y[s].to(device)
        tb = target[s].to(device) if target is not None else None
        adv_b = attack(model, xb, yb, name, target=tb, eps=eps, steps=steps, step_size=step_size, generator=gen,
                       patch=patch, **weights)
        pred_b, scores_b = _predict_and_score(model, adv_b, detectors)
        adv.append(adv_b.cpu())
        pred.append(pred_b)
        scores.append(scores_b)
        if judge is not None:
            with torch.no_grad():
                judged.append(judge.to(device)(adv_b).argmax(1).cpu())
    return torch.cat(adv), torch.cat(pred), torch.cat(scores, 1), torch.cat(judged) if judged else None


def _measures(detectors: list[Detector], clean: torch.Tensor, adv_scores: torch.Tensor, success: torch.Tensor,
              flags: torch.Tensor, any_flag: torch.Tensor, judged: torch.Tensor | None,
              aimed: torch.Tensor) -> dict[str, float]:
    """One attack's rates: the global detector's, each other detector's and the jointly calibrated union's."""
    r = {**detection_rates(success, flags[0]),
         "deflect": deflection_rate(judged, aimed, success, flags[0]) if judged is not None else math.nan,
         "auroc": detection_auroc(clean[0], adv_scores[0][success])}
    for i, d in enumerate(detectors[1:], 1):
        r[f"detect_{d.name}"] = _rate(flags[i][success])
        r[f"auroc_{d.name}"] = detection_auroc(clean[i], adv_scores[i][success])
    r["detect_any"], r["undetected_any"] = _rate(any_flag[success]), _rate(success & ~any_flag)
    if judged is not None:
        r["deflect_any"] = deflection_rate(judged, aimed, success, any_flag)
    return r


def _fmt(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.3f}"


def _ci(p: float, n: int) -> str:
    """p with the half-width of its 95% normal-approximation binomial interval over n images."""
    return "–" if math.isnan(p) else f"{p:.3f} ± {1.96 * math.sqrt(p * (1 - p) / max(n, 1)):.3f}"


def _main_table(label: str, clean_acc: float, results: dict[str, dict[str, float]], n: int, judged: bool) -> str:
    rows = ["| model | clean accuracy | attack | detector weight | success rate | detection rate (global) "
            "| undetected success (global) | undetected success (union) | deflection |",
            "|---|---|---|---|---|---|---|---|---|"]
    for i, (a, r) in enumerate(results.items()):
        head = f"| {label} | {clean_acc:.4f} |" if i == 0 else "| | |"
        w = f"{r['weight']:g}" if "weight" in r else "–"
        rows.append(f"{head} {a} | {w} | {_ci(r['success'], n)} | {_fmt(r['detect'])} | {_ci(r['undetected'], n)} | "
                    f"{_ci(r['undetected_any'], n)} | {_fmt(r['deflect']) if judged else 'not measured'} |")
    return "\n".join(rows)


def _detector_table(results: dict[str, dict[str, float]]) -> str:
    rows = ["| attack | global | local | cycle | union (undetected success) |", "|---|---|---|---|---|"]
    for a, r in results.items():
        rows.append(f"| {a} | {_fmt(r['detect'])} / {_fmt(r['auroc'])} | {_fmt(r['detect_local'])} / "
                    f"{_fmt(r['auroc_local'])} | {_fmt(r['detect_cycle'])} / {_fmt(r['auroc_cycle'])} | "
                    f"{_fmt(r['detect_any'])} ({_fmt(r['undetected_any'])}) |")
    return "\n".join(rows)


def _sweep_table(sweep: dict[str, list[dict[str, float]]]) -> str:
    rows = ["| attack | detector weight | success rate | undetected success (global) | undetected success (union) |",
            "|---|---|---|---|---|"]
    for a, runs in sweep.items():
        rows += [f"| {a} | {r['weight']:g} | {_fmt(r['success'])} | {_fmt(r['undetected'])} | "
                 f"{_fmt(r['undetected_any'])} |" for r in runs]
    return "\n".join(rows)


def _reconstruction_figure(model: nn.Module, x: torch.Tensor, adversarial: dict[str, torch.Tensor], path: Path,
                           eps: float) -> Path:
    """Rows: clean inputs and their reconstructions, then each attack's images and their reconstructions."""
    from zoo._plots import _pyplot, _save

    plt = _pyplot()
    device = _device(model)
    rows = [("clean", x)] + [(a, adv) for a, adv in adversarial.items()]
    with torch.no_grad():
        rows = [r for label, img in rows for r in ((label, img), (f"r({label})",
                model.scores_and_reconstruction(img.to(device))[1].cpu()))]
    cols = max(len(x), 1)
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.9 + 0.9, len(rows) * 0.9 + 0.4), squeeze=False)
    for (label, img), line in zip(rows, axes):
        for j, ax in enumerate(line):
            if j < len(img):
                ax.imshow(img[j].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        line[0].set_ylabel(label, fontsize=7)
    return _save(fig, path, f"Inputs and class-conditional reconstructions (L∞ ε = {eps:g})")


def _roc_figure(detectors: list[Detector], clean: torch.Tensor, adversarial: dict[str, tuple], path: Path,
                fpr: float) -> Path:
    """One panel per detector: ROC of clean against successful adversarial images, one curve per attack."""
    from torchmetrics.functional.classification import binary_roc

    from zoo._plots import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(detectors), figsize=(3.2 * len(detectors), 3.2), squeeze=False)
    for i, (d, ax) in enumerate(zip(detectors, axes[0])):
        for a, (_, scores, success) in adversarial.items():
            pos = scores[i][success]
            if not len(pos) or not clean.shape[1]:
                continue
            s = torch.cat([clean[i], pos])
            labels = torch.cat([torch.zeros(clean.shape[1]), torch.ones(len(pos))]).long()
            f, t, _ = binary_roc(s, labels)
            ax.plot(f.numpy(), t.numpy(), label=f"{a} ({detection_auroc(clean[i], pos):.3f})")
        ax.axvline(fpr, color="gray", ls="--", lw=0.8)
        ax.plot([0, 1], [0, 1], color="lightgray", lw=0.8)
        ax.set_title(f"{d.name} detector", fontsize=9)
        ax.set_xlabel("false positive rate (clean)", fontsize=8)
        ax.set_ylabel("detection rate (successful attacks)", fontsize=8)
        ax.legend(fontsize=6, title="attack (AUROC)", title_fontsize=6)
    return _save(fig, path, "Detection ROC curves")
