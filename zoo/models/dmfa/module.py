"""Lightning glue for MFAs and deep MFAs fitted by EM: each training step adds a batch's sufficient statistics
(no gradients, manual optimisation), the sums are all-reduced across processes and the M-step runs once per
epoch: before validation sees the model, else at the epoch's end (with `val_check_interval` < 1 it also runs at
each mid-epoch validation, i.e. incremental EM). Pixels are dequantised so that the continuous density is a lower
bound on the probability of the discrete image, reported in bits per dimension."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torchmetrics import MeanMetric

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.data.dequantise import bits_per_dim, dequantise
from zoo.models.dmfa.model import MFA, Stats, collapse, dmfa_log_prob, dmfa_sample, num_parameters


def _add(a: Stats | None, b: Stats) -> Stats:
    return b if a is None else {k: a[k] + b[k] for k in a}


class EStepCounter(torch.optim.Optimizer):
    """Lightning counts `global_step` (checkpoints, `max_steps`, resume) in optimizer steps: each E-step batch is one
    step of this optimizer, which changes nothing; EM's M-step happens once per epoch."""

    def __init__(self, params):
        super().__init__(params, {})

    def step(self, closure=None):
        return None


@register_model("mfa")
class MFAModule(ZooModule):
    """A mixture of factor analysers on (dequantised) images, fitted by EM (Ghahramani & Hinton 1996).

    `forward(x)` is log p(x) in nats for x [B, D] (or images) on the model's [0, 1) scale. Metrics: `val|test/loglik`
    (nats per image of the dequantised data in [0, 1)) and `val|test/bpd` (bits per dimension of the discrete
    images: (log L − loglik / D) / log 2, lower is better; only with `levels`).

    Args:
        in_features: D (pixels per image).
        components: K; factors: q (per component).
        shared_psi: one noise vector Ψ for all components (Ghahramani & Hinton) instead of one per component.
        levels: grey levels of the data (256 for 8-bit images, 17 for sklearn's digits); None: continuous data,
            used as they are (no dequantisation, no bits per dimension).
        min_variance: floor on Ψ (on the [0, 1) scale; dequantisation noise alone has variance 1 / (12 L²)).
        loading_scale: initial Λ ~ N(0, loading_scale² Var[x_d] / q); means start at random training images.
        seed: seeds the initialisation and the evaluation's dequantisation noise.
        weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, in_features: int = 784, components: int = 10, factors: int = 10, shared_psi: bool = False,
                 levels: int | None = 256, min_variance: float = 1e-6, loading_scale: float = 0.5, seed: int = 0,
                 weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.automatic_optimization = False
        self.layer1 = MFA(1, components, in_features, factors, shared_psi, min_variance)
        self.register_buffer("initialised", torch.tensor(False))
        self.train_loglik = torch.nn.ModuleDict({"layer1": MeanMetric()})  # log p of what each layer is fitted to
        kinds = ("loglik", "bpd") if levels is not None else ("loglik",)
        self.metrics = torch.nn.ModuleDict({f"{s}_{k}": MeanMetric() for s in ("val", "test") for k in kinds})
        self._stats: dict[str, Stats] = {}
        self.init_weights_from(weights)

    # ---------------------------------------------------------------- density
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1.log_prob(x.flatten(1))

    def bits_per_dim(self, loglik: torch.Tensor) -> torch.Tensor:
        """Bits per dimension of the discrete data (an upper bound, from the dequantised density); NaN without levels."""
        if self.hparams.levels is None:
            return torch.full_like(torch.as_tensor(loglik, dtype=torch.float64), math.nan)
        return bits_per_dim(loglik, self.hparams.in_features, self.hparams.levels)

    def _generator(self, *salt: int) -> torch.Generator:
        g = torch.Generator()
        h = self.hparams.seed
        for s in salt:
            h = h * 1_000_003 + s
        return g.manual_seed(h % (2 ** 63))

    # ---------------------------------------------------------------- EM through Lightning
    def em_targets(self, x: torch.Tensor, epoch: int, generator: torch.Generator
                   ) -> dict[str, tuple[MFA, torch.Tensor, torch.Tensor | None]]:
        """The layer(s) that epoch fits, each with its data and groups: here layer 1 on the images."""
        return {"layer1": (self.layer1, x, None)}

    def _initialise(self, x: torch.Tensor) -> None:
        """Layer 1 from the first batch of every process (all-gathered, so every rank starts identical)."""
        xs = self.all_gather(x).reshape(-1, x.shape[-1])
        self.layer1.init_from_data(xs, self._generator(0), self.hparams.loading_scale)
        self.initialised.fill_(True)

    def training_step(self, batch, batch_idx):
        # noise seeded by (seed, rank, epoch, batch): a run resumed from a checkpoint draws what it would have drawn
        g = self._generator(6, self.global_rank, self.current_epoch, batch_idx)
        x = dequantise(batch[0], self.hparams.levels, g).to(self.device)
        self.optimizers().step()
        with torch.no_grad():
            if not bool(self.initialised):
                self._initialise(x)
            for name, (layer, data, group) in self.em_targets(x, self.current_epoch, g).items():
                s = layer.statistics(data, group)
                self._stats[name] = _add(self._stats.get(name), s)
                metric = self.train_loglik[name]
                metric.update(s["loglik"] / s["count"], weight=s["count"])
                self.log("train/loglik" + ("" if name == "layer1" else f"_{name}"), metric, on_step=False,
                         on_epoch=True, prog_bar=True)
        return None

    @torch.no_grad()
    def m_step(self) -> None:
        """Sum every process's statistics, then update the layer(s) they came from."""
        layers = {"layer1": self.layer1, **({"layer2": self.layer2} if hasattr(self, "layer2") else {})}
        for name in sorted(self._stats):
            s = self._stats[name]
            if dist.is_available() and dist.is_initialized():
                for t in s.values():
                    dist.all_reduce(t)
            layers[name].m_step(s)
        self._stats = {}

    @torch.no_grad()
    def fit_in_memory(self, images: torch.Tensor, epochs: int, batch_size: int) -> "MFAModule":
        """The recipe's EM without a Trainer, one process (for analyses that refit with other seeds): every epoch
        fresh dequantisation noise and a seeded shuffle, statistics summed over batches, one M-step."""
        g = self._generator(5)
        for epoch in range(epochs):
            x = dequantise(images, self.hparams.levels, g)[torch.randperm(len(images), generator=g)].to(self.device)
            if not bool(self.initialised):
                self.layer1.init_from_data(x[:batch_size], self._generator(0), self.hparams.loading_scale)
                self.initialised.fill_(True)
            for b in range(0, len(x), batch_size):
                for name, (layer, data, group) in self.em_targets(x[b:b + batch_size], epoch, g).items():
                    self._stats[name] = _add(self._stats.get(name), layer.statistics(data, group))
            self.m_step()
        return self

    def on_validation_epoch_start(self) -> None:
        if self._stats:  # validation and checkpoints see the updated model, not last epoch's
            self.m_step()

    def on_train_epoch_end(self) -> None:
        if self._stats:
            self.m_step()

    def configure_optimizers(self):
        return EStepCounter(self.parameters())

    # ---------------------------------------------------------------- evaluation
    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x = dequantise(batch[0], self.hparams.levels, self._generator(1, self.global_rank, batch_idx)).to(self.device)
        with torch.no_grad():
            ll = self(x)
        for kind, value in (("loglik", ll), ("bpd", self.bits_per_dim(ll))):
            if f"{stage}_{kind}" not in self.metrics:
                continue
            metric = self.metrics[f"{stage}_{kind}"]
            metric.update(value)
            self.log(f"{stage}/{kind}", metric, on_step=False, on_epoch=True, prog_bar=kind == "bpd")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    # ---------------------------------------------------------------- analysis for `zoo reproduce`
    def _test_images(self, datamodule: Any) -> torch.Tensor:
        datamodule.setup("test")
        ds = datamodule.test_set
        return dequantise(ds.__getitems__(list(range(len(ds))))[0], self.hparams.levels, self._generator(2))

    def _row(self, model: str, layer1: str, layer2: str, parameters: int, ll: torch.Tensor) -> dict[str, Any]:
        return {"model": model, "layer 1": layer1, "layer 2": layer2, "parameters": parameters, "ll": ll}

    def analysis_rows(self, x: torch.Tensor) -> list[dict[str, Any]]:
        """The table's models, each scored on the same dequantised test images x."""
        hp = self.hparams
        return [self._row(f"MFA ({self.zoo_key})", f"{hp.components} x {hp.factors}", "–",
                          num_parameters(self.layer1), self(x))]

    def analysis_notes(self, x: torch.Tensor, rows: list[dict[str, Any]]) -> list[str]:
        return []

    def analysis_metrics(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def analyse(self, folder: Path, datamodule: Any = None) -> dict[str, Any]:
        """A table of test log-likelihoods (this model and what it is compared with, with parameter counts) and
        a figure of component means and samples (image data)."""
        x = self._test_images(datamodule).to(self.device)
        rows = self.analysis_rows(x)
        lines = ["| model | components x factors, layer 1 | layer 2 (per first-layer component) | parameters | "
                 "test nats / image | test bits / dim |", "|---|---|---|---|---|---|"]
        for r in rows:
            ll = r["ll"].mean()
            lines.append(f"| {r['model']} | {r['layer 1']} | {r['layer 2']} | {r['parameters']:,} | {ll.item():.2f} | "
                         f"{self.bits_per_dim(ll).item():.4f} |")
        notes = self.analysis_notes(x, rows)
        table = "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "")
        figures = {}
        side = math.isqrt(self.hparams.in_features)
        if folder is not None and side * side == self.hparams.in_features:
            figures["samples.png"] = self.figure(Path(folder) / "samples.png", side)
        title = (f"Test log-likelihood on the {len(x):,} test images, dequantised with one fixed noise draw "
                 "(higher nats, lower bits per dimension are better)")
        return {"tables": {title: table}, "figures": figures, "metrics": self.analysis_metrics(rows)}

    def sample_images(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Noise-free samples μ_k + Λ_k z (the images the factors draw; the pixel noise Ψ is left out)."""
        return self.layer1.sample(n, generator, noise=False)[0]

    def figure_panels(self, g: torch.Generator) -> list[tuple[str, torch.Tensor]]:
        order = self.layer1.weight[0].detach().cpu().argsort(descending=True)
        means = self.layer1.mean[0].detach().cpu()[order]
        cols = min(max(self.hparams.components, 10), 20)
        return [("first-layer component means μ_c, by π_c", means[:cols]),
                (f"samples μ_c + W_c z of this {self.zoo_key.upper()}", self.sample_images(cols, g)),
                ("", self.sample_images(cols, g))]

    def figure(self, path: Path, side: int) -> Path:
        from zoo._plots import _pyplot, _save

        plt = _pyplot()
        panels = self.figure_panels(self._generator(3))
        cols = max(len(p) for _, p in panels)
        fig, axes = plt.subplots(len(panels), cols, figsize=(cols * 0.8, len(panels) * 0.95 + 0.3), squeeze=False)
        for row, (title, imgs) in zip(axes, panels):
            row[0].text(0, 1.12, title, transform=row[0].transAxes, fontsize=7, va="bottom").set_in_layout(False)
            for ax, img in zip(row, imgs):
                ax.imshow(img.reshape(side, side).clamp(0, 1).cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
            for ax in row:
                ax.axis("off")
        return _save(fig, path, "")


@register_model("dmfa")
class DMFAModule(MFAModule):
    """A two-layer deep MFA (Tang, Salakhutdinov & Hinton 2012), learned greedily by EM.

    Epochs < `layer1_epochs` fit the first-layer MFA (C = `components` components, d = `factors` factors). Then it
    is frozen and every later epoch fits, for each first-layer component c at once, a second-layer MFA of
    `sub_components` components with `sub_factors` factors on the factor space of c: each training image x gives
    one draw (c, z) from the first layer's posterior p(c, z | x) (c ~ p(c | x), or its argmax with
    `assign="argmax"`; z ~ p(z | x, c)), fresh every epoch, and z trains the second-layer MFA of c. The deep model
    replaces each first-layer component's N(0, I) factor prior by its second-layer MFA; its exact density is a
    shallow MFA of C·K components (`collapse()`), computed more cheaply through the shared W_c (`dmfa_log_prob`).
    Until layer 2 starts it is N(0, I) exactly, so the model's density is then the first layer's.

    Args (besides MFAModule's):
        sub_components, sub_factors: K and d₂ of every second-layer MFA.
        layer1_epochs: epochs of first-layer EM before the second layer is fitted.
        assign: how a training image picks its first-layer component for layer 2: "sample" or "argmax".
        sub_spread: the second layer starts with means ~ N(0, s²), loadings ~ N(0, s²/d₂) and Ψ = 1 − s².
        compare_with: a zoo checkpoint (the same-budget shallow MFA) that `analyse` also scores on the same
            dequantised test images, when it is at hand.
        refit_seeds: `analyse` also refits this DMFA and the `compare_with` MFA (its init_args, trained for
            `layer1_epochs`) with this many further seeds, in memory on the training images, and tabulates the
            paired test differences (cheap data sets only).
    """

    def __init__(self, in_features: int = 784, components: int = 10, factors: int = 10, sub_components: int = 4,
                 sub_factors: int = 4, layer1_epochs: int = 10, assign: Literal["sample", "argmax"] = "sample",
                 shared_psi: bool = False, levels: int | None = 256, min_variance: float = 1e-6,
                 loading_scale: float = 0.5, sub_spread: float = 0.5, compare_with: str | None = None,
                 refit_seeds: int = 0, seed: int = 0, weights: str | None = None):
        if assign not in ("sample", "argmax"):
            raise ValueError(f"assign must be 'sample' or 'argmax', got {assign!r}")
        super().__init__(in_features, components, factors, shared_psi, levels, min_variance, loading_scale, seed)
        self.save_hyperparameters(ignore=["weights"])
        self.layer2 = MFA(components, sub_components, factors, sub_factors, shared_psi, min_variance)
        self.register_buffer("layer2_initialised", torch.tensor(False))
        self.train_loglik["layer2"] = MeanMetric()
        self._analysis: dict[str, Any] = {}  # the compared baseline while `analyse` runs
        self.init_weights_from(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dmfa_log_prob(self.layer1, self.layer2, x.flatten(1))

    def collapse(self) -> MFA:
        return collapse(self.layer1, self.layer2)

    def em_targets(self, x: torch.Tensor, epoch: int, generator: torch.Generator
                   ) -> dict[str, tuple[MFA, torch.Tensor, torch.Tensor | None]]:
        if epoch < self.hparams.layer1_epochs:
            return super().em_targets(x, epoch, generator)
        if not bool(self.layer2_initialised):
            self.layer2.init_around_standard_normal(self._generator(4), self.hparams.sub_spread)
            self.layer2_initialised.fill_(True)
        z, c = self.layer1.sample_posterior(x, generator, self.hparams.assign)
        return {"layer2": (self.layer2, z, c)}

    def sample_images(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return dmfa_sample(self.layer1, self.layer2, n, generator, noise=False)

    def _baseline(self) -> torch.nn.Module | None:
        if not self.hparams.compare_with:
            return None
        import zoo

        try:
            return zoo.load(self.hparams.compare_with, map_location=self.device)
        except Exception as e:  # not reproduced yet: the table says so
            self._analysis["baseline_error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            return None

    def analysis_rows(self, x: torch.Tensor) -> list[dict[str, Any]]:
        hp = self.hparams
        rows = [self._row("DMFA (dmfa)", f"{hp.components} x {hp.factors}",
                          f"{hp.sub_components} x {hp.sub_factors}", num_parameters(self.layer1, self.layer2),
                          self(x)),
                self._row("its first layer alone (before layer 2)", f"{hp.components} x {hp.factors}", "–",
                          num_parameters(self.layer1), self.layer1.log_prob(x))]
        self._analysis["base"] = b = self._baseline()  # kept out of the state dict
        if b is not None:
            rows.append(self._row(f"same-budget shallow MFA ({hp.compare_with})",
                                  f"{b.hparams.components} x {b.hparams.factors}", "–",
                                  sum(p.numel() for p in b.parameters()), b(x)))
        return rows

    def analysis_notes(self, x: torch.Tensor, rows: list[dict[str, Any]]) -> list[str]:
        hp = self.hparams
        n = min(len(x), 500)
        collapsed = self.collapse()
        gap = (collapsed.log_prob(x[:n]) - rows[0]["ll"][:n]).abs().max().item()
        notes = [f"The DMFA is exactly a shallow MFA of {hp.components} x {hp.sub_components} = "
                 f"{hp.components * hp.sub_components} components with {hp.factors} factors each "
                 f"({num_parameters(collapsed):,} parameters when stored that way): on the first {n} test images "
                 f"its density computed through the shared first layer and the explicit collapsed mixture differ "
                 f"by at most {gap:.1e} nats."]
        for name, other in (("its first layer", rows[1]), ("the same-budget MFA", rows[2] if len(rows) > 2 else None)):
            if other is not None:
                d = rows[0]["ll"] - other["ll"]
                notes.append(f"DMFA minus {name}, paired over test images: {d.mean().item():+.2f} ± "
                             f"{d.std().item() / math.sqrt(len(d)):.2f} nats per image (± one standard error), "
                             f"higher on {(d > 0).double().mean().item():.0%} of them.")
        if hp.compare_with and len(rows) < 3:
            notes.append(f"{hp.compare_with} was not at hand ({self._analysis.get('baseline_error', '')}); "
                         f"`zoo reproduce {hp.compare_with}` makes it.")
        return notes

    def analysis_metrics(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        out = {"test/bpd_layer1": self.bits_per_dim(rows[1]["ll"].mean()).item()}
        if len(rows) > 2:
            out["test/loglik_gain_vs_baseline"] = (rows[0]["ll"] - rows[2]["ll"]).mean().item()
        return out

    @torch.no_grad()
    def analyse(self, folder: Path, datamodule: Any = None) -> dict[str, Any]:
        out = super().analyse(folder, datamodule)
        if self.hparams.refit_seeds and self._analysis.get("base") is not None and self.planned_epochs:
            table, metrics = self.seed_table(datamodule)
            out["tables"][f"DMFA vs the same-budget MFA over {self.hparams.refit_seeds + 1} seeds"] = table
            out["metrics"].update(metrics)
        return out

    def seed_table(self, datamodule: Any) -> tuple[str, dict[str, float]]:
        """Both recipes again with seeds seed+1, ..., fitted in memory (same data, epochs and batches), beside this
        run and its baseline: the paired test difference for each seed."""
        hp, base = self.hparams, self._analysis["base"]
        datamodule.setup("fit")
        images = datamodule.train_set.__getitems__(list(range(len(datamodule.train_set))))[0]
        x = self._test_images(datamodule).to(self.device)
        runs = [(hp.seed, self, base)]
        for s in range(hp.seed + 1, hp.seed + 1 + hp.refit_seeds):
            print(f"dmfa analyse: refitting both models with seed {s}")
            deep = type(self)(**{**self.zoo_init_args(), "seed": s, "compare_with": None, "refit_seeds": 0})
            shallow = type(base)(**{**base.zoo_init_args(), "seed": s})
            runs.append((s, deep.to(self.device).fit_in_memory(images, self.planned_epochs, datamodule.batch_size),
                         shallow.to(self.device).fit_in_memory(images, hp.layer1_epochs, datamodule.batch_size)))
        lines = ["| seed | DMFA test bits / dim | same-budget MFA test bits / dim | DMFA − MFA, nats / image |",
                 "|---|---|---|---|"]
        gains = []
        for s, deep, shallow in runs:
            a, b = deep(x), shallow(x)
            gains.append((a - b).mean().item())
            lines.append(f"| {s}{' (this run)' if deep is self else ''} | {self.bits_per_dim(a.mean()).item():.4f} | "
                         f"{self.bits_per_dim(b.mean()).item():.4f} | {gains[-1]:+.2f} |")
        g = torch.tensor(gains)
        lines.append(f"\nDMFA higher in {(g > 0).sum().item()} of {len(g)} seeds; mean difference {g.mean().item():+.2f} "
                     f"nats per image.")
        return "\n".join(lines), {"seeds/dmfa_better_fraction": (g > 0).double().mean().item(),
                                   "seeds/mean_loglik_gain": g.mean().item()}

    def figure_panels(self, g: torch.Generator) -> list[tuple[str, torch.Tensor]]:
        panels = super().figure_panels(g)
        panels[1] = ("DMFA samples μ_c + W_c z, z from the second-layer MFA of c", panels[1][1])
        base = self._analysis.get("base")
        if base is not None:
            panels.append((f"samples of {self.hparams.compare_with}", base.sample_images(len(panels[0][1]), g)))
        return panels
