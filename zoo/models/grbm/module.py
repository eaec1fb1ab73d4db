"""Lightning glue for the GRBM: the modified contrastive divergence whose negative chains start from noise,
plain SGD with gradient-norm clipping and a cosine learning rate (the paper's training), and the measurements
`zoo reproduce` makes: samples from noise by Gibbs-Langevin and by plain Gibbs from the same model, their FID
with a zoo classifier's features (images), densities and sample quality (2-D mixtures)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo._plots import sample_grids
from zoo.data.dequantise import bits_per_dim, dequantise
from zoo.metrics import fid_to_test_set
from zoo.models.grbm.model import GRBM, ChainStats, sample_bernoulli

SAMPLERS = ("gibbs_langevin", "gibbs")
#: the samplers `analyse` compares: the module's Gibbs-Langevin settings, the same with the Metropolis-Hastings
#: adjustment from the first step (when the settings do not already adjust every step), and plain Gibbs
LABELS = {"gibbs_langevin": "Gibbs-Langevin", "gibbs_langevin_mh": "Gibbs-Langevin, MH-adjusted",
          "gibbs": "plain Gibbs"}


@register_model("grbm")
class GRBMModule(ZooModule):
    """A Gaussian-Bernoulli RBM trained by the paper's modified CD (arXiv 2210.10318).

    Each step: the positive statistics use the batch (h ~ p(h|v)); the negative chains (as many as the batch)
    start from N(0, I) noise and run `cd_steps` steps of the sampler, and every state after `cd_burnin` enters
    the negative statistics. The CD gradient (mean ∂E/∂θ on data minus on the chains) is applied by SGD with
    gradient-norm clipping and a cosine learning rate over the epochs.

    Args:
        visible, hidden, init_var: the GRBM (init: W ~ N(0, init_var/√(V+H)), σ² = init_var).
        image_shape: [C, H, W] of image data (None for points); used to draw samples and compute FID.
        data_mean, data_std: inputs are standardised as (x − mean)/std before the GRBM sees them, as the
            official code does (Fashion-MNIST: 0.286, 0.353; MNIST: 0.1307, 0.3081; 2-D mixtures: 0, 1); one
            value, or one per image channel (CelebA).
        sampler: "gibbs_langevin" (the paper's) or "gibbs", for the negative chains.
        cd_steps, cd_burnin: chain length from noise and the steps left out of the statistics.
        langevin_steps, langevin_eta, langevin_anneal, langevin_temperature: K inner steps of the paper's
            v ← v − η ∇_v E(v, h) + √(2ηT) ξ on every chain alike, η on a cosine schedule from
            η_max = langevin_eta · mean σ² (or constant), T = langevin_temperature (1: the paper's equation). The
            reference code averages the energy gradient over its B chains and not the noise, so its Langevin_eta
            is langevin_eta · B at T = B: the defaults, 20/512 and 512, are its recipes' 20 at their batch 512,
            and keep those moves whatever the number of chains here.
        mh_from: the Metropolis-Hastings adjustment from this chain step on (None: never).
        mh_warmup_epochs: epochs at the start without the adjustment.
        lr, clip_norm, weight_decay: SGD (momentum 0), gradient-norm clip, weight decay on W only.
        sample_chains, sample_steps: samples are drawn in groups of `sample_chains` chains from noise, for
            `sample_steps` steps (the last is the conditional mean E[v | h] for images, as the official code).
        fid_features: the zoo classifier whose penultimate features FID uses (catalogue name or release
            folder; None: no FID); it is loaded in `analyse` only and is not part of the weights.
        fid_samples: generated images per sampler for FID (and points per sampler for the 2-D metrics).
        levels: grey levels of integer image data (17 for sklearn's digits): training and evaluation then see
            it dequantised, (v + u)/levels with u ~ U[0, 1), and val/test also log bits per dimension of the
            discrete images, comparable with the DMFA entries'. None: the data are used as they are.
        ais_chains, ais_steps: annealed importance sampling for log Z when it cannot be computed exactly (more
            than 20 hidden units and more than 2 visible ones), at every validation and test; 0 steps (the
            default: its cost grows with V x H x steps): no likelihood for such models.
        seed: seeds the chains of each step (with rank and step) and of the analysis.
        weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, visible: int = 784, hidden: int = 4096, init_var: float = 1.0,
                 image_shape: list[int] | None = [1, 28, 28], data_mean: float | list[float] = 0.0,
                 data_std: float | list[float] = 1.0,
                 sampler: Literal["gibbs_langevin", "gibbs"] = "gibbs_langevin", cd_steps: int = 100,
                 cd_burnin: int = 0, langevin_steps: int = 10, langevin_eta: float = 20 / 512,
                 langevin_anneal: bool = True, langevin_temperature: float = 512.0, mh_from: int | None = None,
                 mh_warmup_epochs: int = 0, lr: float = 0.01, clip_norm: float = 10.0, weight_decay: float = 0.0,
                 sample_chains: int = 100, sample_steps: int = 100, fid_features: str | None = "kd-fmnist-teacher",
                 fid_samples: int = 1000, levels: int | None = None, ais_chains: int = 100, ais_steps: int = 0,
                 seed: int = 0, weights: str | None = None):
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if image_shape is not None and math.prod(image_shape) != visible:
            raise ValueError(f"image_shape {image_shape} does not hold {visible} visible units")
        if not 0 <= cd_burnin < cd_steps:
            raise ValueError(f"cd_burnin={cd_burnin} must be in [0, cd_steps={cd_steps})")
        self.save_hyperparameters(ignore=["weights"])
        self.grbm = GRBM(visible, hidden, init_var)
        self.register_buffer("mu", self._per_unit(data_mean, "data_mean"), persistent=False)
        self.register_buffer("sd", self._per_unit(data_std, "data_std"), persistent=False)
        self._log_z: torch.Tensor | None = None
        self.init_weights_from(weights)

    # ---------------------------------------------------------------- data space
    def _per_unit(self, value: float | list[float], name: str) -> torch.Tensor:
        """A standardisation constant per visible unit [V], from one value or one per image channel."""
        hp = self.hparams
        t = torch.as_tensor(value, dtype=torch.float32)
        if t.dim() == 0:
            return t.expand(hp.visible).clone()
        if hp.image_shape is None or t.shape != (hp.image_shape[0],):
            raise ValueError(f"{name} has {t.numel()} values; give one, or one per channel of image_shape "
                             f"{hp.image_shape}")
        return t.repeat_interleave(hp.visible // hp.image_shape[0])

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mu) / self.sd

    def log_jacobian(self) -> torch.Tensor:
        """log |det| of the standardisation's inverse, Σ_i log sd_i: turns densities of v into densities of x."""
        return self.sd.log().sum()

    def to_data(self, v: torch.Tensor) -> torch.Tensor:
        """GRBM space back to data space (images: [N, C, H, W] clamped to [0, 1])."""
        x = v * self.sd + self.mu
        shape = self.hparams.image_shape
        return x if shape is None else x.view(-1, *shape).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The free energy F(v) per example (−log of the unnormalised density of the standardised input)."""
        return self.grbm.free_energy(self.standardise(x))

    # ---------------------------------------------------------------- sampling
    def _generator(self, *keys: int) -> torch.Generator:
        seed = self.hparams.seed
        for k in keys:
            seed = (seed * 1_000_003 + k) % (2**63)
        return torch.Generator(device=self.device).manual_seed(seed)

    def _mh_from(self) -> int | None:
        hp = self.hparams
        warm = self._trainer is not None and self.training and self.current_epoch < hp.mh_warmup_epochs
        return None if warm else hp.mh_from

    def run_chains(self, v: torch.Tensor, steps: int, sampler: str, generator: torch.Generator,
                   stats: ChainStats | None = None, burn_in: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """`steps` steps of `sampler` from v with this module's sampler settings ("gibbs_langevin_mh": the
        Gibbs-Langevin settings with the Metropolis-Hastings adjustment from the first step)."""
        hp = self.hparams
        if sampler == "gibbs":
            return self.grbm.gibbs(v, steps, generator, stats, burn_in)
        eta = hp.langevin_eta * float(self.grbm.var.detach().mean())
        mh_from = 0 if sampler == "gibbs_langevin_mh" else self._mh_from()
        return self.grbm.gibbs_langevin(v, steps, hp.langevin_steps, eta, hp.langevin_anneal, hp.langevin_temperature,
                                        mh_from, generator, stats, burn_in)

    @torch.no_grad()
    def sample(self, n: int, sampler: str = "gibbs_langevin", steps: int | None = None, seed: int = 0,
               conditional_mean: bool | None = None) -> torch.Tensor:
        """n samples from N(0, I) noise in data space, drawn `sample_chains` chains at a time: `steps` − 1
        sampler steps, then (images, by default) the conditional mean μ + W h with h ~ p(h | v), as the
        official code shows its samples; points return the last v itself."""
        hp = self.hparams
        steps = hp.sample_steps if steps is None else steps
        mean = hp.image_shape is not None if conditional_mean is None else conditional_mean
        out = []
        for i, start in enumerate(range(0, n, hp.sample_chains)):
            g = self._generator(seed, i)
            v0 = torch.randn(min(hp.sample_chains, n - start), hp.visible, generator=g, device=self.device)
            v, _ = self.run_chains(v0, steps - 1 if mean else steps, sampler, g)
            if mean:
                v = self.grbm.mean_v_given_h(sample_bernoulli(self.grbm.p_h_given_v(v), g))
            out.append(self.to_data(v).cpu())
        return torch.cat(out)

    # ---------------------------------------------------------------- training: modified CD
    def training_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        g = self._generator(self.global_rank, self.global_step)
        if self.hparams.levels is not None:
            x = dequantise(x, self.hparams.levels, g).to(self.device, x.dtype)
        v = self.standardise(x)
        with torch.no_grad():
            logits = self.grbm.hidden_logits(v)
            pos = ChainStats(self.grbm)
            pos.add(v, sample_bernoulli(torch.sigmoid(logits), g))
            neg = ChainStats(self.grbm)
            noise = torch.randn(v.shape, generator=g, device=v.device, dtype=v.dtype)
            self.run_chains(noise, self.hparams.cd_steps, self.hparams.sampler, g, neg, self.hparams.cd_burnin)
            g_pos, g_neg = pos.grad(self.grbm), neg.grad(self.grbm)
            recon = (v - self.grbm.mean_v_given_h(torch.sigmoid(logits))).pow(2).mean()
        # a surrogate whose gradient is exactly the CD gradient, so backward (and DDP's all-reduce) carry it
        loss = sum((p * (g_pos[k] - g_neg[k])).sum() for k, p in self.grbm.named_parameters())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"GRBM step {self.global_step}: the negative chains diverged (non-finite statistics; mean variance "
                f"{float(self.grbm.var.detach().mean()):.3g}). Lower langevin_eta or lr, or keep the Metropolis-Hastings "
                f"adjustment on (mh_from=0), which rejects the steps that blow up.")
        if self._trainer is not None:
            self.log("train/recon_mse", recon, prog_bar=True)
            self.log("train/var_mean", self.grbm.var.mean().detach())
            if neg.acceptance is not None:
                self.log("train/mh_acceptance", neg.acceptance)
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = self.hparams.clip_norm if gradient_clip_val is None else gradient_clip_val
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD([
            {"params": [self.grbm.W], "weight_decay": hp.weight_decay},
            {"params": [self.grbm.b, self.grbm.mu, self.grbm.log_var], "weight_decay": 0.0},
        ], lr=hp.lr, momentum=0.0)
        epochs = self.planned_epochs
        if epochs is None or epochs < 1:
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def log_partition(self) -> torch.Tensor | None:
        """log Z: exactly by enumeration (H ≤ 20) or by 2-D quadrature; else estimated by AIS (the same seed on
        every rank, so ranks agree), or None when ais_steps is 0."""
        hp = self.hparams
        if hp.hidden <= 20:
            return self.grbm.log_partition()
        if hp.visible == 2:
            return self.grbm.log_partition_grid()
        if hp.ais_steps > 0:
            g = torch.Generator(device=self.device).manual_seed(hp.seed)
            return self.grbm.log_partition_ais(hp.ais_chains, hp.ais_steps, g)[0]
        return None

    def on_validation_epoch_start(self) -> None:
        self._log_z = self.log_partition()

    def on_test_epoch_start(self) -> None:
        self._log_z = self.log_partition()

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        hp = self.hparams
        x = batch[0]
        if hp.levels is not None:  # one fixed noise draw per batch and rank, so evaluations repeat exactly
            x = dequantise(x, hp.levels, self._generator(1, self.global_rank, batch_idx)).to(self.device, x.dtype)
        v = self.standardise(x)
        self.log(f"{stage}/recon_mse", self.grbm.reconstruction_error(v), sync_dist=True)
        if self._log_z is not None:  # −log p(x) of the data, with the standardisation's Jacobian
            nll = self.grbm.free_energy(v) + self._log_z + self.log_jacobian()
            self.log(f"{stage}/nll", nll.mean(), sync_dist=True, prog_bar=True)
            if hp.levels is not None:
                self.log(f"{stage}/bpd", bits_per_dim(-nll.mean(), hp.visible, hp.levels), sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    # ---------------------------------------------------------------- the paper's measurements
    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """Samples from noise by Gibbs-Langevin (as configured, and Metropolis-Hastings adjusted when it is not
        already) and by plain Gibbs from this same model (the paper's first claim: Gibbs-Langevin samples
        better). Images: FID against the test set with the zoo classifier's features, and the sample grids.
        2-D points: the model density on a grid next to the data's, and how far each sampler's points are from
        the held-out data (MMD) and from the model itself (TV)."""
        if datamodule is None:
            return {}
        datamodule.setup("test")
        self.eval()
        if self.hparams.image_shape is None and self.hparams.visible == 2:
            return self._analyse_points(folder, datamodule)
        return self._analyse_images(folder, datamodule)

    def _compared_samples(self, n: int, **kw) -> dict[str, torch.Tensor]:
        out = {}
        names = ["gibbs_langevin", *([] if self.hparams.mh_from == 0 else ["gibbs_langevin_mh"]), "gibbs"]
        for s in names:  # the same noise and seeds for every sampler
            print(f"analyse: {n} samples by {s} ({self.hparams.sample_steps} steps from noise)", flush=True)
            out[s] = self.sample(n, s, seed=self.hparams.seed, **kw)
        return out

    def _analyse_images(self, folder: Path | None, datamodule) -> dict[str, Any]:
        hp = self.hparams
        samples = self._compared_samples(max(hp.fid_samples, 100))
        figures = {}
        if folder is not None:
            path = sample_grids({f"{LABELS[s]} ({hp.sample_steps} steps)": x[:100] for s, x in samples.items()},
                                folder / "samples_from_noise.png",
                                title=f"GRBM samples from noise, same model (H = {hp.hidden})")
            figures[path.name] = path
        if hp.fid_features is None:
            return {"figures": figures}
        fids = fid_to_test_set(hp.fid_features, datamodule, samples, hp.fid_samples)
        metrics = {f"{name}/fid_zoo_cnn": v for name, v in fids.items()}
        real = datamodule.test_set
        table = "\n".join([
            f"| samples ({hp.fid_samples} each, vs the {len(real)} test images) | FID (zoo FMNIST CNN features) |",
            "|---|---|",
            *(f"| {LABELS[s]}, {hp.sample_steps} steps from noise | {metrics[f'{s}/fid_zoo_cnn']:.2f} |"
              for s in samples),
            f"| held-out real images (validation split): the floor | {metrics['real_heldout/fid_zoo_cnn']:.2f} |",
        ])
        title = (f"FID with the penultimate features of the zoo classifier {hp.fid_features} (not Inception; "
                 "lower is better)")
        return {"metrics": metrics, "figures": figures, "tables": {title: table}}

    def _analyse_points(self, folder: Path | None, datamodule) -> dict[str, Any]:
        from zoo.models.grbm.analysis import density_panels, mmd2, tv_to_density

        hp = self.hparams
        samples = self._compared_samples(hp.fid_samples)
        test = datamodule.test_set.images
        log_z = self.log_partition()

        @torch.no_grad()
        def log_density(x: torch.Tensor) -> torch.Tensor:
            return -self.grbm.free_energy(self.standardise(x)) - log_z - self.log_jacobian()

        metrics = {}
        for s, x in samples.items():
            metrics[f"{s}/mmd2"] = mmd2(x, test)
            metrics[f"{s}/tv_to_model"], floor = tv_to_density(x, log_density)
        metrics["exact_draws/tv_to_model"] = floor
        nll = float(-log_density(test).mean())
        metrics["test/nll"] = nll
        truth = getattr(datamodule, "log_prob", None)
        if truth is not None:
            metrics["test/nll_true_mixture"] = float(-truth(test).mean())
        figures = {}
        if folder is not None:
            path = density_panels(log_density, truth, test, {LABELS[s]: x for s, x in samples.items()},
                                  folder / "density.png",
                                  title=f"2-D mixture: GRBM (H = {hp.hidden}) density and samples from noise")
            figures[path.name] = path
        rows = [
            "| | " + " | ".join(LABELS[s] for s in samples) + " |",
            "|---|" + "---|" * len(samples),
            f"| MMD² to {len(test)} held-out points (lower is better) | "
            + " | ".join(f"{metrics[f'{s}/mmd2']:.4f}" for s in samples) + " |",
            f"| TV of the points' histogram to the GRBM's own density (≈ {floor:.3f} expected of {hp.fid_samples} "
            "exact draws) | " + " | ".join(f"{metrics[f'{s}/tv_to_model']:.3f}" for s in samples) + " |",
        ]
        nll_rows = ["| density | test NLL (nats per point) |", "|---|---|",
                    f"| GRBM (log Z by quadrature) | {nll:.4f} |"]
        if truth is not None:
            nll_rows.append(f"| the true mixture (the best possible) | {metrics['test/nll_true_mixture']:.4f} |")
        return {"metrics": metrics, "figures": figures, "tables": {
            f"{hp.fid_samples} samples from noise per sampler, {hp.sample_steps} steps, same model": "\n".join(rows),
            "Held-out log-likelihood": "\n".join(nll_rows)}}
