"""Lightning glue for the two commentaries: `CommentaryWeighting` learns an example-weighting teacher by
backpropagating through the student's training (Alg. 1), `CommentaryBlending` learns the C×C blending matrix by
implicit differentiation while one student trains (Alg. 2). Both hold out the DataModule's validation split as the
meta-validation set that the commentary is tuned on, as the official code does; `analyse` retrains fresh students
with the learned commentary beside the baselines (analysis.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.models.commentaries.model import (
    Student, WeightingTeacher, blend, blend_coefficients, blended_loss, neumann_hypergradient, unroll, validation_loss,
)


class _CommentaryModule(ZooClassifier):
    """Shared parts: the student's metrics, seeded generators per (rank, step), and the meta-validation images
    (the DataModule's `val_set`, sampled `meta_batch` at a time; None: all of it)."""

    head_keys = ("student.head.*",)

    def _setup_common(self, num_classes: int) -> None:
        self.metrics = nn.ModuleDict({s: torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
                                      for s in ("val", "test")})
        self._meta: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def _generator(self, *keys: int) -> torch.Generator:
        seed = self.hparams.seed
        for k in keys:
            seed = (seed * 1_000_003 + k) % (2**63)
        return torch.Generator().manual_seed(seed)

    def on_fit_start(self) -> None:
        dm = self.trainer.datamodule
        held = getattr(dm, "val_set", None)
        if held is None or len(held) == 0:
            raise ValueError(f"{type(self).__name__} tunes its commentary on held-out images: give a DataModule with a "
                             "validation split (val_set), e.g. zoo.data.IDXDataModule with val_size > 0")
        self._meta = held.__getitems__(list(range(len(held))))

    def share_rank0(self, tensors: list[torch.Tensor]) -> None:
        """Under DDP, give every rank rank 0's values of tensors that no gradient all-reduce keeps in step (the
        student kept after an outer step, BN running statistics)."""
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            for t in tensors:
                torch.distributed.broadcast(t.data, src=0)

    def meta_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Meta-validation images for this step: `meta_batch` drawn without replacement (seeded by rank and step,
        so ranks draw different ones), or the whole held-out split."""
        x, y = self._meta
        n = self.hparams.meta_batch
        if n is not None and n < len(y):
            idx = torch.randperm(len(y), generator=self._generator(1, self.global_rank, self.global_step))[:n]
            x, y = x[idx], y[idx]
        return x.to(self.device), y.to(self.device)


@register_model("commentaries_weighting")
class CommentaryWeighting(_CommentaryModule):
    """Example-weighting commentaries learned by backpropagation through training (Alg. 1 of arXiv 2011.03037).

    Each training step is one outer step: the batch (inner_steps × inner_batch training images) becomes the
    student's N inner minibatches; the student starts from its fixed initialisation `student_init`, takes N
    differentiable Adam steps on Σ_i w(x_i, t/N)·CE_i, and the teacher takes one Adam step on the gradient of the
    trained student's cross-entropy on held-out images. `student` keeps the last trained student, which `forward`,
    validation and test use. A batch with fewer images than N × inner_batch (an epoch's last) is skipped.

    Args:
        in_channels, image_size, channels, num_classes: student and teacher shape (two conv blocks; the official
            widths are 32 and 64).
        curriculum: the teacher also sees the training progress t/N (the paper's curriculum commentary).
        inner_steps, inner_batch: N and the student's batch (official: 100 and 8).
        inner_lr, outer_lr: Adam learning rates of student and teacher (official: 1e-4 both).
        meta_batch: held-out images per outer step for the teacher's objective (None: the whole validation split,
            as the official code).
        eval_seeds, eval_epochs, eval_batch: `analyse` trains fresh students from `eval_seeds` new initialisations
            for `eval_epochs` passes over the training split in batches of `eval_batch` (official: 5 and 64) with
            the learned, a random (the teacher's initialisation) and no commentary, the teacher told the global
            step t as t/N, as the official retraining does.
        memory_unrolls: unroll lengths at which `analyse` measures the memory the unrolled graph holds.
        seed: seeds the fixed student initialisation, the teacher's initialisation and the meta batches.
        weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: list[int] = [32, 64],
                 num_classes: int = 10, curriculum: bool = True, inner_steps: int = 100, inner_batch: int = 8,
                 inner_lr: float = 1e-4, outer_lr: float = 1e-4, meta_batch: int | None = None, eval_seeds: int = 3,
                 eval_epochs: int = 5, eval_batch: int = 64, memory_unrolls: list[int] = [5, 10, 20, 40], seed: int = 0,
                 weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.automatic_optimization = False
        self.student_init = self.make_student(seed).requires_grad_(False)
        self.student = self.make_student(seed).requires_grad_(False)
        self.teacher = self.initial_teacher()
        self._setup_common(num_classes)
        self.init_weights_from(weights)

    def make_student(self, seed: int) -> Student:
        hp = self.hparams
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Student(hp.in_channels, hp.image_size, hp.channels, hp.num_classes)

    def initial_teacher(self) -> WeightingTeacher:
        """The teacher as it starts (seeded): the 'random commentary' that `analyse` compares with."""
        hp = self.hparams
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hp.seed + 1)
            return WeightingTeacher(hp.in_channels, hp.image_size, hp.channels, hp.curriculum)

    def example_weights(self, x: torch.Tensor, step: int) -> torch.Tensor:
        return self.teacher(x, step / self.hparams.inner_steps)

    def outer_loss(self, xs: torch.Tensor, ys: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor):
        """L_V of the student after N inner steps from the fixed initialisation on xs [N, b, ...], ys [N, b]; a
        graph over the teacher's weights. Returns (L_V, the final student weights and buffers, inner losses)."""
        params = {k: p.detach().clone().requires_grad_(True) for k, p in self.student_init.named_parameters()}
        buffers = {k: b.clone() for k, b in self.student_init.named_buffers()}
        final, inner = unroll(self.student, params, buffers, xs, ys, self.example_weights, self.hparams.inner_lr)
        return validation_loss(self.student, final, buffers, xv, yv), final, buffers, inner

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        x, y = batch
        n = hp.inner_steps * hp.inner_batch
        if len(y) < n:
            return None
        xs = x[:n].view(hp.inner_steps, hp.inner_batch, *x.shape[1:])
        ys = y[:n].view(hp.inner_steps, hp.inner_batch)
        xv, yv = self.meta_batch()
        opt = self.optimizers()
        opt.zero_grad()
        self.student.train()
        meta, final, buffers, inner = self.outer_loss(xs, ys, xv, yv)
        self.manual_backward(meta)
        opt.step()
        with torch.no_grad():
            self.student.load_state_dict({**{k: v.detach() for k, v in final.items()}, **buffers})
        self.share_rank0([*self.student.parameters(), *self.student.buffers()])
        with torch.no_grad():
            w = self.example_weights(xs[0], 0)
        self.log("train/meta_loss", meta.detach(), prog_bar=True)
        self.log("train/inner_loss_last", inner[-1] / hp.inner_batch)
        self.log("train/mean_weight_start", w.mean())
        return meta.detach()

    def configure_optimizers(self):
        return torch.optim.Adam(self.teacher.parameters(), lr=self.hparams.outer_lr)

    def analyse(self, folder: Path | None, datamodule: Any = None) -> dict[str, Any]:
        from zoo.models.commentaries.analysis import analyse_weighting

        return analyse_weighting(self, folder, datamodule)


@register_model("commentaries_blend")
class CommentaryBlending(_CommentaryModule):
    """Label-dependent blending commentaries learned by implicit differentiation (Alg. 2 of arXiv 2011.03037).

    Each training step: the student takes an Adam step on the blended batch (each image blended with a random
    partner from the batch by λ(y_i, y_j), the labels mixed in the same proportion); then, after `warmup_epochs`,
    the blend logits φ take an Adam step on the Neumann-series hypergradient, computed on a new random training
    batch of the same size, blended afresh (the training term; the official loop draws it from a new shuffle of the
    training set), and `meta_batch` held-out images (the validation term), with α = the student's learning rate.
    Under DDP each rank's hypergradient is averaged before the step.

    Args:
        in_channels, image_size, channels, num_classes: the student (the official CIFAR student is a ResNet-18; the
            same conv student as Alg. 1 here).
        lr, hyper_lr: Adam learning rates of student and blend logits (official: 1e-3 and 1e-2).
        neumann_terms: K, Hessian-vector products in the series (official: 1).
        blend_init: the initial logit of every pair (official: −1, λ ≈ 0.87).
        warmup_epochs: hyper steps start after this epoch (official: −1, from the start).
        meta_batch: held-out images per hyper step.
        eval_seeds, eval_epochs: `analyse` trains fresh students from new initialisations with the learned matrix
            fixed, with one λ for every pair (the learned matrix's mean) and without blending, by the official
            retraining (SGD, Nesterov momentum, lr 0.1 with three tenfold cuts, weight decay 5e-4).
        seed: seeds the student's initialisation, the blending partners and the meta batches.
        weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: list[int] = [32, 64],
                 num_classes: int = 10, lr: float = 1e-3, hyper_lr: float = 1e-2, neumann_terms: int = 1,
                 blend_init: float = -1.0, warmup_epochs: int = -1, meta_batch: int = 128, eval_seeds: int = 2,
                 eval_epochs: int = 1, seed: int = 0, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.automatic_optimization = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.student = Student(in_channels, image_size, channels, num_classes)
        self.blend_logits = nn.Parameter(torch.full((num_classes, num_classes), float(blend_init)))
        self._setup_common(num_classes)
        self.init_weights_from(weights)

    def blend_matrix(self) -> torch.Tensor:
        """λ(y_i, y_j) for every pair of classes [C, C]: the weight kept on an example of class y_i (row) blended
        with one of class y_j (column)."""
        return 1 - 0.5 * torch.sigmoid(self.blend_logits.detach())

    def blended_batch_loss(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        partner = torch.randperm(len(y), generator=g).to(y.device)
        lam = blend_coefficients(self.blend_logits, y, partner)
        return blended_loss(self.student(blend(x, y, lam, partner)), y, lam, partner)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._train = self.trainer.datamodule.train_set

    def fresh_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n training images drawn at random (seeded by rank and step) for the hypergradient's training term."""
        idx = torch.randperm(len(self._train), generator=self._generator(4, self.global_rank, self.global_step))[:n]
        x, y = self._train.__getitems__(idx.tolist())
        return x.to(self.device), y.to(self.device)

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        x, y = batch
        opt, hyper_opt = self.optimizers()
        self.student.train()
        loss = self.blended_batch_loss(x, y, self._generator(2, self.global_rank, self.global_step))
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.log("train/loss", loss.detach(), prog_bar=True)
        if self.current_epoch > hp.warmup_epochs:
            params = [p for p in self.student.parameters()]
            xt, yt = self.fresh_batch(len(y))
            train_loss = self.blended_batch_loss(xt, yt, self._generator(3, self.global_rank, self.global_step))
            xv, yv = self.meta_batch()
            val_loss = nn.functional.cross_entropy(self.student(xv), yv)
            (hyper,) = neumann_hypergradient(train_loss, val_loss, params, [self.blend_logits],
                                             opt.param_groups[0]["lr"], hp.neumann_terms)
            self.blend_logits.grad = self.trainer.strategy.reduce(hyper, reduce_op="mean")
            hyper_opt.optimizer.step()  # the wrapped optimiser: one global step per batch is the student's
            self.log("train/meta_loss", val_loss.detach())
            self.log("train/blend_mean", self.blend_matrix().mean())
        hyper_opt.zero_grad()
        self.share_rank0(list(self.student.buffers()))  # BN statistics; DDP's all-reduce keeps the weights
        return loss.detach()

    def configure_optimizers(self):
        return [torch.optim.Adam(self.student.parameters(), lr=self.hparams.lr),
                torch.optim.Adam([self.blend_logits], lr=self.hparams.hyper_lr)]

    def analyse(self, folder: Path | None, datamodule: Any = None) -> dict[str, Any]:
        from zoo.models.commentaries.analysis import analyse_blending

        return analyse_blending(self, folder, datamodule)
