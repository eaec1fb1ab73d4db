"""The paper's measurements of a learned commentary, apart from the Lightning glue: fresh students trained with it
beside the baselines (training curves and final test accuracy), the memory an unrolled inner loop holds at several
lengths, and the model-card figures (curves, the blend matrix as a heatmap)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from zoo._plots import _pyplot, _save
from zoo.models.commentaries.model import blend, blended_loss, saved_tensor_bytes, unroll, validation_loss, weighted_loss

Weight = Callable[[torch.Tensor, int], torch.Tensor]


def images(ds, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset's images and labels (all, or `idx`) in one indexing op."""
    return ds.__getitems__(list(range(len(ds))) if idx is None else idx.tolist())


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    """Test accuracy in eval mode (BN on its running statistics); the model is put back in training mode."""
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch), y.split(batch)))
    model.train()
    return correct / len(y)


def train_weighted(student: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, weight: Weight, lr: float,
                   epochs: int, batch: int, seed: int, every: int,
                   test: tuple[torch.Tensor, torch.Tensor]) -> list[float]:
    """The official retraining (student_train_weighting.py): an ordinary (first-order) Adam run of `student` over
    `epochs` shuffled passes of (x, y) in batches of `batch`, each example's loss weighted by `weight(x, t)` with t
    the global step (so past the teacher's N inner steps its input t/N goes beyond 1, as there); no gradient to the
    commentary. Test accuracy after every `every` steps and at the end."""
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    student.train()
    g = torch.Generator().manual_seed(seed)
    batches = [idx for _ in range(epochs) for idx in torch.randperm(len(y), generator=g).split(batch)]
    curve = []
    for t, idx in enumerate(batches):  # sequential training steps
        idx = idx.to(x.device)
        xb, yb = x[idx], y[idx]
        with torch.no_grad():
            w = weight(xb, t)
        loss = weighted_loss(student(xb), yb, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (t + 1) % every == 0 or t + 1 == len(batches):
            curve.append(accuracy(student, *test))
    return curve


def unroll_memory(module, lengths: list[int], batch: tuple[torch.Tensor, torch.Tensor],
                  meta: tuple[torch.Tensor, torch.Tensor]) -> dict[int, tuple[float, float]]:
    """For each unroll length N: the MiB of distinct storages that the Alg. 1 graph saves (the memory the teacher's
    backward pass must hold) and the seconds of the forward and backward passes; with CUDA, the peak allocated
    memory instead of the saved-storage count."""
    hp = module.hparams
    x, y = batch
    out = {}
    for n in lengths:
        xs = x[: n * hp.inner_batch].view(n, hp.inner_batch, *x.shape[1:])
        ys = y[: n * hp.inner_batch].view(n, hp.inner_batch)
        cuda = xs.is_cuda
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        params = {k: p.detach().clone().requires_grad_(True) for k, p in module.student_init.named_parameters()}
        buffers = {k: b.clone() for k, b in module.student_init.named_buffers()}

        def run():
            final, _ = unroll(module.student, params, buffers, xs, ys, lambda xb, t: module.teacher(xb, t / n),
                              hp.inner_lr)
            return validation_loss(module.student, final, buffers, *meta)

        loss, saved = saved_tensor_bytes(run)
        torch.autograd.grad(loss, list(module.teacher.parameters()))
        seconds = time.perf_counter() - start
        if cuda:
            saved = torch.cuda.max_memory_allocated() - base
        out[n] = (saved / 2**20, seconds)
    return out


def analyse_weighting(module, folder: Path | None, datamodule) -> dict[str, Any]:
    """Fresh students (new initialisations, new data order) trained `eval_epochs` epochs in batches of
    `eval_batch` with the learned commentary, the teacher at its initialisation (a random commentary) and none
    (every weight 1): test accuracy along the way and at the end (mean and spread over `eval_seeds`); and the
    unrolled graph's memory at `memory_unrolls`."""
    if datamodule is None:
        return {}
    hp = module.hparams
    datamodule.setup("fit")
    datamodule.setup("test")
    module.eval()
    device = module.device
    test = tuple(t.to(device) for t in images(datamodule.test_set))
    x_train, y_train = (t.to(device) for t in images(datamodule.train_set))
    steps = hp.eval_epochs * -(-len(y_train) // hp.eval_batch)
    every = max(1, steps // 5)
    random_teacher = module.initial_teacher().to(device)
    commentaries: dict[str, Weight] = {
        "learned": lambda x, t: module.teacher(x, t / hp.inner_steps),
        "random": lambda x, t: random_teacher(x, t / hp.inner_steps),
        "none": lambda x, t: x.new_ones(len(x)),
    }
    module.teacher.train()  # BN on batch statistics, as while learning it
    curves: dict[str, list[list[float]]] = {k: [] for k in commentaries}
    fixed: dict[str, list[float]] = {}
    n_train = len(y_train)
    # the initialisation the teacher was learned with (a new data order), then fresh ones
    for s, init in [(-1, hp.seed), *((s, 10_000 + s) for s in range(hp.eval_seeds))]:
        for name, weight in commentaries.items():  # the same initialisation and batches for each commentary
            student = module.make_student(init).to(device)
            curve = train_weighted(student, x_train, y_train, weight, hp.inner_lr, hp.eval_epochs, hp.eval_batch,
                                   10_000 + s, every, test)
            if s < 0:
                fixed[name] = curve
            else:
                curves[name].append(curve)
            which = "the learning initialisation" if s < 0 else f"fresh initialisation {s}"
            print(f"analyse: {which}, {name} commentary: test accuracy {curve[-1]:.4f}", flush=True)
    marks = [min(steps, every * (i + 1)) for i in range(len(fixed["none"]))]
    metrics: dict[str, float] = {}
    for name, runs in curves.items():
        c = torch.tensor(runs, dtype=torch.float64)
        metrics[f"student_acc/{name}"] = float(c[:, -1].mean())
        metrics[f"student_acc/{name}_std"] = float(c[:, -1].std()) if len(c) > 1 else 0.0
        metrics[f"student_curve_mean_acc/{name}"] = float(c.mean())
        metrics[f"student_acc_learning_init/{name}"] = fixed[name][-1]
        metrics[f"student_curve_mean_acc_learning_init/{name}"] = sum(fixed[name]) / len(fixed[name])
    rows = ["| commentary | student | " + " | ".join(f"step {m}" for m in marks) + " | mean over the curve |",
            "|---|---|" + "---|" * (len(marks) + 1)]
    for name, runs in curves.items():
        c = torch.tensor(runs, dtype=torch.float64)
        cells = [f"{float(a):.4f} ± {float(sd):.4f}" for a, sd in zip(c.mean(0), c.std(0) if len(c) > 1 else c[0] * 0)]
        rows.append(f"| {name} | {hp.eval_seeds} fresh initialisations | " + " | ".join(cells)
                    + f" | {metrics[f'student_curve_mean_acc/{name}']:.4f} |")
    for name, curve in fixed.items():
        rows.append(f"| {name} | the initialisation it was learned with | " + " | ".join(f"{a:.4f}" for a in curve)
                    + f" | {metrics[f'student_curve_mean_acc_learning_init/{name}']:.4f} |")
    tables = {f"Students trained {hp.eval_epochs} epoch(s), {steps} Adam steps of {hp.eval_batch} images (lr "
              f"{hp.inner_lr}; the teacher sees t/N up to {(steps - 1) / hp.inner_steps:.0f}), test accuracy (fresh: "
              f"mean ± std over {hp.eval_seeds} initialisations)": "\n".join(rows)}

    meta = tuple(t[:500].to(device) for t in images(datamodule.val_set))
    tables["What the teacher says: mean example weight on 500 held-out images by training progress t/N"] = \
        weight_table(module.teacher, random_teacher, meta, list(getattr(datamodule, "classes", range(hp.num_classes))),
                     metrics)
    longest = max(hp.memory_unrolls)
    idx = torch.randperm(n_train, generator=torch.Generator().manual_seed(0))[: longest * hp.inner_batch]
    batch = tuple(t.to(device) for t in images(datamodule.train_set, idx))
    memory = unroll_memory(module, sorted(hp.memory_unrolls), batch, meta)
    lengths = torch.tensor(list(memory), dtype=torch.float64)
    mib = torch.tensor([m for m, _ in memory.values()], dtype=torch.float64)
    slope = float(((lengths - lengths.mean()) * (mib - mib.mean())).sum() / (lengths - lengths.mean()).pow(2).sum())
    for n, (m, _) in memory.items():
        metrics[f"unroll_memory_mib/n{n}"] = m
    metrics["unroll_memory_mib/per_step"] = slope
    what = "peak CUDA memory allocated" if device.type == "cuda" else "distinct storages saved by autograd"
    mem_rows = ["| inner steps N | MiB held by the unrolled graph | seconds (forward + teacher backward) |",
                "|---|---|---|", *(f"| {n} | {m:.1f} | {sec:.2f} |" for n, (m, sec) in memory.items())]
    mem_rows.append(f"\nLeast-squares slope: {slope:.2f} MiB per inner step ({what}; student widths {hp.channels}, "
                    f"batch {hp.inner_batch}, 500 held-out images). Memory grows linearly with N because every "
                    "step's activations and its second-order graph are kept for the teacher's gradient.")
    tables["Memory of backpropagation through training (Alg. 1) against the unroll length"] = "\n".join(mem_rows)

    figures = {}
    if folder is not None:
        figures["training_curves.png"] = curves_figure(marks, curves, folder / "training_curves.png",
                                                       f"Fresh students with and without the learned commentary "
                                                       f"({hp.eval_seeds} seeds)")
    return {"metrics": metrics, "tables": tables, "figures": figures}


@torch.no_grad()
def weight_table(teacher, random_teacher, held: tuple[torch.Tensor, torch.Tensor], classes: list,
                 metrics: dict[str, float]) -> str:
    """Mean weight per class (and over all, with its spread) at t/N = 0, ½, 1, for the learned teacher and the
    teacher at its initialisation; the learned means go into `metrics` as teacher_weight/t{0,0.5,1}."""
    x, y = held
    rows = ["| teacher | t/N | all (mean ± std) | " + " | ".join(str(c) for c in classes) + " |",
            "|---|---|---|" + "---|" * len(classes)]
    for name, net in (("learned", teacher), ("at its initialisation", random_teacher)):
        for progress in (0.0, 0.5, 1.0):
            w = net(x, progress)
            if name == "learned":
                metrics[f"teacher_weight/t{progress:g}"] = float(w.mean())
            per_class = " | ".join(f"{float(w[y == c].mean()):.3f}" for c in range(len(classes)))
            rows.append(f"| {name} | {progress:g} | {float(w.mean()):.3f} ± {float(w.std()):.3f} | {per_class} |")
    return "\n".join(rows)


def curves_figure(marks: list[int], curves: dict[str, list[list[float]]], path: Path, title: str) -> Path:
    """Mean test accuracy against training steps per commentary, with a ±1 std band over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, runs in curves.items():
        c = torch.tensor(runs, dtype=torch.float64)
        mean, sd = c.mean(0), (c.std(0) if len(c) > 1 else c[0] * 0)
        ax.plot(marks, mean, marker="o", label=f"{name} commentary")
        ax.fill_between(marks, mean - sd, mean + sd, alpha=0.2)
    ax.set_xlabel("student training steps")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    return _save(fig, path, title)


def retraining_lr(step: int, total: int) -> float:
    """test_mixup.py's schedule for a run of `total` steps: 0.1, cut tenfold at 30%, 60% and 80% of the run."""
    return 0.1 * 0.1 ** sum(step >= round(f * total) for f in (0.3, 0.6, 0.8))


def train_blended(student: torch.nn.Module, train, lam_matrix: torch.Tensor | None, epochs: int, batch: int,
                  seed: int) -> None:
    """The official retraining (test_mixup.py): SGD with Nesterov momentum 0.9, learning rate 0.1 cut tenfold at
    30%, 60% and 80% of the run (its epochs 30, 60 and 80 of 100) and weight decay 5e-4, over `epochs` shuffled
    passes of the training set, each image blended with a random partner of its batch by the fixed matrix
    λ(y_i, y_j) (None: no blending, plain cross-entropy)."""
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    student.train()
    g = torch.Generator().manual_seed(seed)
    device = next(student.parameters()).device
    batches = [idx for _ in range(epochs) for idx in torch.randperm(len(train), generator=g).split(batch)]
    for step, idx in enumerate(batches):
        opt.param_groups[0]["lr"] = retraining_lr(step, len(batches))
        x, y = (t.to(device) for t in images(train, idx))
        if lam_matrix is None:
            loss = F.cross_entropy(student(x), y)
        else:
            partner = torch.randperm(len(y), generator=g).to(device)
            lam = lam_matrix[y, y[partner]]
            loss = blended_loss(student(blend(x, y, lam, partner)), y, lam, partner)
        opt.zero_grad()
        loss.backward()
        opt.step()


def analyse_blending(module, folder: Path | None, datamodule) -> dict[str, Any]:
    """Fresh students trained `eval_epochs` epochs with the learned blend matrix fixed (reusing the commentary),
    with one λ for every pair of classes (the learned matrix's mean: the same amount of blending, no label
    dependence) and without blending; test accuracy mean ± std over `eval_seeds`; the matrix as a heatmap."""
    if datamodule is None:
        return {}
    from zoo.models.commentaries.model import Student

    hp = module.hparams
    datamodule.setup("fit")
    datamodule.setup("test")
    device = module.device
    learned = module.blend_matrix().to(device)
    policies = {"learned": learned, "uniform": torch.full_like(learned, float(learned.mean())), "none": None}
    test = tuple(t.to(device) for t in images(datamodule.test_set))
    accs: dict[str, list[float]] = {k: [] for k in policies}
    batch = datamodule.batch_size
    for s in range(hp.eval_seeds):
        for name, lam in policies.items():  # the same initialisation and data order for each policy
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(20_000 + s)
                student = Student(hp.in_channels, hp.image_size, hp.channels, hp.num_classes).to(device)
            train_blended(student, datamodule.train_set, lam, hp.eval_epochs, batch, 20_000 + s)
            accs[name].append(accuracy(student, *test))
            print(f"analyse: seed {s}, {name} blending: test accuracy {accs[name][-1]:.4f}", flush=True)
    metrics: dict[str, float] = {}
    for name, a in accs.items():
        t = torch.tensor(a, dtype=torch.float64)
        metrics[f"blend_acc/{name}"] = float(t.mean())
        metrics[f"blend_acc/{name}_std"] = float(t.std()) if len(t) > 1 else 0.0
    metrics["blend_lambda/mean"] = float(learned.mean())
    metrics["blend_lambda/min"] = float(learned.min())
    metrics["blend_lambda/max"] = float(learned.max())
    metrics["blend_lambda/diagonal_mean"] = float(learned.diagonal().mean())
    rows = ["| blending policy | test accuracy (mean ± std) |", "|---|---|",
            *(f"| {name} | {metrics[f'blend_acc/{name}']:.4f} ± {metrics[f'blend_acc/{name}_std']:.4f} |"
              for name in accs)]
    tables = {f"Fresh students, {hp.eval_epochs} epoch(s) of the official retraining (SGD, Nesterov momentum 0.9, lr "
              f"0.1 cut tenfold at 30/60/80% of the run, weight decay 5e-4, batch {batch}), {hp.eval_seeds} "
              "initialisations, the blend policy fixed": "\n".join(rows)}
    figures = {}
    if folder is not None:
        classes = list(getattr(datamodule, "classes", range(hp.num_classes)))
        figures["blend_matrix.png"] = heatmap(learned.cpu(), classes, folder / "blend_matrix.png",
                                              "Learned λ(y_i, y_j): weight kept on the row-class image")
    return {"metrics": metrics, "tables": tables, "figures": figures}


def heatmap(matrix: torch.Tensor, classes: list, path: Path, title: str) -> Path:
    """A C×C matrix with the class names on both axes and each value printed in its cell."""
    plt = _pyplot()
    c = len(classes)
    fig, ax = plt.subplots(figsize=(0.6 * c + 2.5, 0.6 * c + 1.5))
    im = ax.imshow(matrix.numpy(), cmap="viridis")
    for i in range(c):
        for j in range(c):
            ax.text(j, i, f"{float(matrix[i, j]):.2f}", ha="center", va="center", fontsize=6, color="white")
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels([str(k) for k in classes], rotation=60, fontsize=7)
    ax.set_yticklabels([str(k) for k in classes], fontsize=7)
    ax.set_xlabel("partner's class y_j")
    ax.set_ylabel("example's class y_i")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path, title)
