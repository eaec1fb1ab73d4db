"""Subclass distillation (Müller, Kornblith & Hinton 2020), the Lightning glue: a CNN teacher whose C classes are
each split into s subclasses it invents (trained on class labels plus the auxiliary loss), and an MLP student
distilled on the teacher's subclass probabilities, on its class probabilities (conventional distillation) or
trained on the labels alone."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zoo._registry import register_model
from zoo.models.baselines import CNNClassifier
from zoo.models.baselines.module import CrossEntropyClassifier
from zoo.models.subclass_distillation.model import (
    TARGETS, auxiliary_loss, class_logits, contingency, normalized_mutual_information, one_to_one_mapping,
    recovery_accuracy, student_loss,
)
from zoo.nn import MLP
from zoo.optim import with_cooldown


@register_model("subclass_teacher")
class SubclassTeacher(CNNClassifier):
    """The small CNN (zoo.nn.ConvNet) with C·s subclass logits; `forward` returns the C class logits (log-sum-exp
    of each class's s subclass logits), `subclass_logits` the C·s. Trained on
    CE(class logits, labels) + β·L_aux(subclass logits, T_aux) (`model.auxiliary_loss`).

    Args:
        in_channels, image_size, channels, hidden, dropout: the ConvNet's shape (dropout before the dense layer).
        num_classes: C, the classes of the labels (2 superclasses for the 2x5 datasets).
        subclasses: s, subclasses per class (5: as many as the original classes hidden in each superclass).
        aux_weight: β, the weight of the auxiliary loss (authors' MNIST demo: 1).
        aux_temperature: T of the auxiliary loss (authors' MNIST demo: 1).
        optimizer, lr, momentum, weight_decay, cooldown: as for CNNClassifier (authors' demo: Adam, 1e-3).

    `analyse` measures how well the subclasses recover the original classes (the datamodule's `fine_labels`).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: list[int] = [16, 32],
                 hidden: list[int] = [128], num_classes: int = 2, subclasses: int = 5, dropout: float = 0.5,
                 aux_weight: float = 1.0, aux_temperature: float = 1.0, optimizer: str = "adam", lr: float = 1e-3,
                 momentum: float = 0.9, weight_decay: float = 0.0, cooldown: bool = False, weights: str | None = None):
        super().__init__(in_channels, image_size, channels, hidden, num_classes * subclasses, dropout,
                         optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay, cooldown=cooldown)
        self.save_hyperparameters(ignore=["weights"])
        self._add_metrics(num_classes)
        self.init_weights_from(weights)

    def subclass_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return class_logits(self.net(x), self.hparams.num_classes)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per device batch: under DDP the auxiliary loss contrasts each example with its own device's batch."""
        z = self.net(x)
        ce = F.cross_entropy(class_logits(z, self.hparams.num_classes), y)
        aux = auxiliary_loss(z, self.hparams.aux_temperature)
        self.log_dict({"train/ce": ce.detach(), "train/aux": aux.detach()})
        return ce + self.hparams.aux_weight * aux

    def analyse(self, folder: Path, datamodule=None) -> dict[str, Any]:
        return subclass_recovery(self, folder, datamodule, "teacher")


@register_model("subclass_student")
class SubclassStudent(CrossEntropyClassifier):
    """A ReLU MLP student of a SubclassTeacher (`forward` returns class logits in every case).

    Args:
        in_features, hidden: the MLP's shape (authors' MNIST demo: 784-784-784).
        num_classes, subclasses: C and s, as for the teacher.
        target: "subclass": C·s logits distilled on the teacher's subclass probabilities (subclass distillation);
            "class": C logits distilled on the teacher's class probabilities (conventional distillation);
            "labels": C logits trained on the labels alone (the teacher is not used).
        teacher: the zoo checkpoint of the SubclassTeacher (catalogue name, release folder or hf-hub:). Loaded when
            training starts, frozen, kept out of the student's weights.
        temperature: T of both softmaxes in the distillation term, scaled by T² (authors' demo: 4).
        alpha: α, the weight of the distillation term; 1 − α weighs the labels' cross-entropy (authors' demo: 0.5).
        lr, weight_decay, cooldown: Adam's settings and the optional linear cooldown (authors' demo: Adam, 1e-3).

    `analyse` (target "subclass") measures the student's subclass recovery and the paper's limited-data
    experiment: fresh students of each target trained on the first n images of a fixed permutation of the
    training set (`transfer_sizes`), `transfer_steps` Adam steps each, tested on the test set.
    """

    transfer_sizes: tuple[int, ...] = (250, 1000, 4000)
    transfer_steps: int = 300
    transfer_batch: int = 256

    def __init__(self, in_features: int = 784, hidden: list[int] = [784, 784], num_classes: int = 2,
                 subclasses: int = 5, target: str = "subclass", teacher: str = "subclass-distill-fmnist2x5-teacher",
                 temperature: float = 4.0, alpha: float = 0.5, lr: float = 1e-3, weight_decay: float = 0.0,
                 cooldown: bool = False, weights: str | None = None):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.save_hyperparameters(ignore=["weights"])
        self.net = MLP(in_features, list(hidden), self.out_features(target, num_classes, subclasses))
        self._add_metrics(num_classes)
        self.__dict__["_teacher"] = None  # outside the module tree: not saved, not trained, not moved by Lightning
        self.init_weights_from(weights)

    @staticmethod
    def out_features(target: str, num_classes: int, subclasses: int) -> int:
        return num_classes * subclasses if target == "subclass" else num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x.flatten(1))
        return class_logits(logits, self.hparams.num_classes) if self.hparams.target == "subclass" else logits

    def subclass_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.target != "subclass":
            raise ValueError(f"a student with target {self.hparams.target!r} has no subclass logits")
        return self.net(x.flatten(1))

    def teacher_subclass_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self._teacher is None:
            import zoo

            teacher = zoo.load(self.hparams.teacher)
            theirs = (teacher.hparams.get("num_classes"), teacher.hparams.get("subclasses"))
            if theirs != (self.hparams.num_classes, self.hparams.subclasses):
                raise ValueError(f"teacher {self.hparams.teacher!r} has (classes, subclasses) {theirs}, the student "
                                 f"expects {(self.hparams.num_classes, self.hparams.subclasses)}")
            for p in teacher.parameters():
                p.requires_grad_(False)
            self.__dict__["_teacher"] = teacher
        with torch.no_grad():
            return self._teacher.to(x.device).eval().subclass_logits(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        hp = self.hparams
        teacher = self.teacher_subclass_logits(x) if hp.target != "labels" else None
        loss = student_loss(self.net(x.flatten(1)), teacher, y, hp.num_classes, hp.target, hp.temperature, hp.alpha)
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        return with_cooldown(opt, self.planned_epochs, self.hparams.cooldown)

    # ---------------------------------------------------------------- the paper's measurements
    def analyse(self, folder: Path, datamodule=None) -> dict[str, Any]:
        if self.hparams.target != "subclass" or datamodule is None:
            return {}
        out = subclass_recovery(self, folder, datamodule, "student")
        sweep = self.transfer_sweep(datamodule, folder)
        for key in ("metrics", "tables", "figures"):
            out.setdefault(key, {}).update(sweep.get(key, {}))
        return out

    def transfer_sweep(self, datamodule, folder: Path | None) -> dict[str, Any]:
        """Students of every target trained from scratch on n transfer images, for each n in `transfer_sizes`,
        against the same teacher; test accuracy on the C classes (`test/acc_transfer<n>_<target>`)."""
        hp = self.hparams
        datamodule.setup("fit")
        train, test = datamodule.train_set, datamodule.test_set
        sizes = [n for n in self.transfer_sizes if n <= len(train)]
        if not sizes:
            return {}
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(datamodule.seed))[:max(sizes)]
        x, y = train.__getitems__(order.tolist())
        x, y = x.to(self.device), y.to(self.device)
        t = torch.cat([self.teacher_subclass_logits(c) for c in x.split(1000)])
        xt, yt = test.__getitems__(list(range(len(test))))
        xt, yt = xt.to(self.device).flatten(1), yt.to(self.device)
        acc: dict[tuple[int, str], float] = {}
        for n in sizes:
            for target in TARGETS:
                net = self._train_fresh(x[:n].flatten(1), y[:n], t[:n], target)
                with torch.no_grad():
                    logits = torch.cat([net(c) for c in xt.split(1000)])
                if target == "subclass":
                    logits = class_logits(logits, hp.num_classes)
                acc[n, target] = float((logits.argmax(1) == yt).float().mean())
                print(f"subclass distillation, transfer set of {n}: {target} student test acc {acc[n, target]:.4f}")
        metrics = {f"test/acc_transfer{n}_{k}": v for (n, k), v in acc.items()}
        rows = ["| transfer images | subclass distillation | conventional distillation | labels only |",
                "|---|---|---|---|"]
        rows += [f"| {n} | {acc[n, 'subclass']:.4f} | {acc[n, 'class']:.4f} | {acc[n, 'labels']:.4f} |" for n in sizes]
        out: dict[str, Any] = {"metrics": metrics,
                               "tables": {"Student test accuracy with a limited transfer set": "\n".join(rows)}}
        if folder is not None:
            out["figures"] = {"transfer_sweep.png": _sweep_figure(sizes, acc, Path(folder) / "transfer_sweep.png")}
        return out

    def _train_fresh(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, target: str) -> torch.nn.Module:
        """A new MLP of this student's shape trained with `target`'s objective, seeded by the transfer size."""
        hp = self.hparams
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(len(y))
            net = MLP(hp.in_features, list(hp.hidden), self.out_features(target, hp.num_classes, hp.subclasses))
            net = net.to(x.device)
            opt = torch.optim.Adam(net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
            g = torch.Generator().manual_seed(len(y))
            batches = torch.randint(len(y), (self.transfer_steps, min(len(y), self.transfer_batch)), generator=g)
            for idx in batches.to(x.device):
                loss = student_loss(net(x[idx]), t[idx], y[idx], hp.num_classes, target, hp.temperature, hp.alpha)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return net.eval()


# ----------------------------------------------------------------------------- shared analysis
@torch.no_grad()
def _subclass_logits(module, dataset) -> torch.Tensor:
    x, _ = dataset.__getitems__(list(range(len(dataset))))
    return torch.cat([module.subclass_logits(c.to(module.device)).float().cpu() for c in x.split(1000)])


def subclass_recovery(module, folder: Path | None, datamodule, who: str) -> dict[str, Any]:
    """How well the argmax of `module.subclass_logits` recovers the original classes (needs a datamodule whose
    splits have `fine_labels`): the one-to-one subclass -> class mapping is chosen on the validation set and
    scored on the test set (`test/subclass_acc`), with the NMI and the number of subclasses that win at least 1%
    of the test images."""
    if datamodule is None:
        return {}
    datamodule.setup("fit")
    if not hasattr(datamodule.test_set, "fine_labels"):
        return {}
    module.eval()
    subclasses = module.hparams.subclasses
    k = module.hparams.num_classes * subclasses
    val_z, val_f = _subclass_logits(module, datamodule.val_set), datamodule.val_set.fine_labels
    test_z, test_f = _subclass_logits(module, datamodule.test_set), datamodule.test_set.fine_labels
    n_fine = int(max(val_f.max(), test_f.max())) + 1
    mapping = one_to_one_mapping(contingency(val_z.argmax(1), val_f, k, n_fine))
    assigned = test_z.argmax(1)
    counts = contingency(assigned, test_f, k, n_fine)
    metrics = {"test/subclass_acc": recovery_accuracy(assigned, test_f, mapping),
               "test/subclass_nmi": normalized_mutual_information(assigned, test_f),
               "test/subclasses_used": float((counts.sum(1) >= 0.01 * len(test_f)).sum())}
    names = list(getattr(datamodule, "fine_classes", ())) or [str(c) for c in range(n_fine)]
    rows = ["| subclass (class.sub) | mapped to | " + " | ".join(names) + " |", "|---" * (n_fine + 2) + "|"]
    rows += [f"| {j // subclasses}.{j % subclasses} | {names[int(mapping[j])] if mapping[j] >= 0 else '-'} | "
             + " | ".join(str(int(c)) for c in counts[j]) + " |" for j in range(k)]
    out: dict[str, Any] = {"metrics": metrics,
                           "tables": {f"The {who}'s subclasses vs the original test classes": "\n".join(rows)}}
    if folder is not None:
        path = Path(folder) / f"{who}_subclasses.png"
        out["figures"] = {path.name: _contingency_figure(counts, subclasses, names, path,
                                                         f"{who}: argmax subclass vs original class (test set)")}
    return out


def _contingency_figure(counts: torch.Tensor, subclasses: int, names: list[str], path: Path, title: str) -> Path:
    from zoo._plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(0.55 * counts.shape[1] + 2.0, 0.4 * counts.shape[0] + 1.6))
    ax.imshow(counts.numpy(), cmap="Blues")
    for (i, j), c in zip(torch.cartesian_prod(torch.arange(counts.shape[0]), torch.arange(counts.shape[1])).tolist(),
                         counts.flatten().tolist()):
        if c:
            ax.text(j, i, str(c), ha="center", va="center", fontsize=6)
    ax.set_yticks(range(counts.shape[0]), [f"{j // subclasses}.{j % subclasses}" for j in range(counts.shape[0])])
    ax.set_xticks(range(counts.shape[1]), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("subclass (class.sub)")
    return _save(fig, path, title)


def _sweep_figure(sizes: list[int], acc: dict[tuple[int, str], float], path: Path) -> Path:
    from zoo._plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for target, label in zip(TARGETS, ("subclass distillation", "conventional distillation", "labels only")):
        ax.plot(sizes, [acc[n, target] for n in sizes], "o-", label=label)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("transfer images")
    ax.set_ylabel("test accuracy (superclasses)")
    ax.legend(fontsize=7)
    return _save(fig, path, "Students with a limited transfer set")
