"""Lightning glue for Bit Diffusion: Algorithm 1 under AdamW with a linear warm-up, an exponential moving average
of the denoiser (what samples and releases use, as the official code), and the measurements `zoo reproduce`
makes: samples from noise, their FID with a zoo classifier's features, and the asymmetric-time ablation (the same
model sampled in few steps with td = 0 and td > 0)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import torch

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.data.augment import random_hflip
from zoo.models.bit_diffusion.model import BitDiffusion


@register_model("bit_diffusion")
class BitDiffusionModule(ZooModule):
    """Bit Diffusion (arXiv 2208.04202) on 8-bit images: each pixel value as `n_bits` analog bits.

    Args:
        image_channels, image_size, n_bits: the data (Fashion-MNIST: 1, 28, 8; CIFAR-10: 3, 32, 8).
        code: "uint8" (plain binary), "gray" (Gray code) or "uint8_s" (a seeded random permutation).
        scale: the analog-bit scale b (bits are ±b).
        pred_type: "x" (x0 prediction, the paper's) or "eps"; the loss is the mean squared error of it.
        self_condition, self_cond_rate: self-conditioning, on the first `self_cond_rate` of each batch.
        dim, channel_mult, num_res_blocks, attention_at, in_stride, dropout, head_dim, time_scaling: the U-Net
            (attention_at lists resolutions, after the input stride).
        lr, weight_decay, warmup_steps, ema_decay: AdamW with a linear warm-up then constant, and the EMA decay.
        sample_steps, td, sampler: Algorithm 2's settings for the release's samples.
        ablation_steps, ablation_tds: the asymmetric-time ablation, FID at each (steps, td) from the same model.
        fid_features: the zoo classifier whose penultimate features FID uses (None: no FID); loaded in
            `analyse` only.
        fid_samples: generated images per FID.
        hflip: mirror each training image left-right with probability ½ (the official CIFAR-10 input pipeline).
        lateral_after_attention: the U-Net's down-path laterals taken after each block's self-attention (the
            FMNIST entries were measured so); False takes them before it, as the official TransUNet does.
        seed: seeds validation noise and the analysis' sampling.
        weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, image_channels: int = 1, image_size: int = 28, n_bits: int = 8,
                 code: Literal["uint8", "gray", "uint8_s"] = "uint8", scale: float = 1.0,
                 pred_type: Literal["x", "eps"] = "x", self_condition: bool = True, self_cond_rate: float = 0.5,
                 dim: int = 64, channel_mult: list[int] = [1, 2], num_res_blocks: list[int] = [2, 2],
                 attention_at: list[int] = [7], in_stride: int = 1, dropout: float = 0.0, head_dim: int = 32,
                 time_scaling: float = 1000.0, lr: float = 1e-4, weight_decay: float = 0.0,
                 warmup_steps: int = 10000, ema_decay: float = 0.9999, sample_steps: int = 100, td: float = 0.0,
                 sampler: Literal["ddim", "ddpm"] = "ddim", ablation_steps: list[int] = [10],
                 ablation_tds: list[float] = [0.0, 1.0], fid_features: str | None = "kd-fmnist-teacher",
                 fid_samples: int = 1000, hflip: bool = False, lateral_after_attention: bool = False, seed: int = 0,
                 weights: str | None = None):
        super().__init__()
        if sampler not in ("ddim", "ddpm"):
            raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.save_hyperparameters(ignore=["weights"])
        self.model = BitDiffusion(image_channels, image_size, n_bits, code, scale, pred_type, self_condition,
                                  self_cond_rate, dim, channel_mult, num_res_blocks, attention_at, in_stride,
                                  dropout, head_dim, time_scaling, lateral_after_attention)
        self.ema = copy.deepcopy(self.model.f).requires_grad_(False)
        self.init_weights_from(weights)

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (as the image DataModules give them) -> integers in [0, 2^n)."""
        top = 2**self.hparams.n_bits - 1
        return (x * top).round().clamp(0, top).long()

    def forward(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """The loss of the EMA denoiser (what is released) on images x in [0, 1], at one fixed draw of times and
        noise (`seed`, default the module's): what validation and testing log."""
        seed = self.hparams.seed if seed is None else seed
        g = torch.Generator(device=x.device).manual_seed(seed)
        return self.model.loss(self.levels(x), g, self.ema)

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, td: float | None = None, sampler: str | None = None,
               seed: int = 0, batch: int = 500) -> torch.Tensor:
        """n images in [0, 1] [n, C, H, W] from the EMA denoiser (defaults: the module's sampler settings)."""
        hp = self.hparams
        steps, td, sampler = (hp.sample_steps if steps is None else steps, hp.td if td is None else td,
                              hp.sampler if sampler is None else sampler)
        g = torch.Generator(device=self.device).manual_seed(seed)
        was = self.ema.training
        self.ema.eval()
        out = [self.model.sample(min(batch, n - s), steps, td, sampler, g, self.ema, self.device).cpu()
               for s in range(0, n, batch)]
        self.ema.train(was)
        return torch.cat(out).float() / (2**hp.n_bits - 1)

    # ---------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if self.hparams.hflip:
            x = random_hflip(x)
        loss = self.model.loss(self.levels(x))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Bit Diffusion step {self.global_step}: the loss is {float(loss)}; lower lr "
                                     "or lengthen warmup_steps.")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        d = self.hparams.ema_decay
        for e, p in zip(self.ema.parameters(), self.model.f.parameters()):
            e.lerp_(p.detach(), 1 - d)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        warm = max(hp.warmup_steps, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---------------------------------------------------------------- evaluation: the loss at fixed noise
    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        loss = self(x, self.hparams.seed * 1_000_003 + batch_idx)
        self.log(f"{stage}/loss", loss, sync_dist=True, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    # ---------------------------------------------------------------- the paper's measurements
    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """Samples from noise with the module's sampler (a grid for the card) and, when `fid_features` is set,
        their FID against the test set with the zoo classifier's features; the asymmetric-time ablation (FID in
        `ablation_steps` steps at each of `ablation_tds`, same model, same noise); held-out real images as the
        floor."""
        from zoo._plots import sample_grids
        from zoo.metrics import fid_to_test_set

        hp = self.hparams
        self.eval()
        n = max(hp.fid_samples, 100)
        label = f"{hp.sampler.upper()}, {hp.sample_steps} steps, td = {hp.td:g}"
        print(f"analyse: {n} samples ({label})", flush=True)
        runs = {f"{hp.sampler}_{hp.sample_steps}steps": self.sample(n, seed=hp.seed)}
        for steps in hp.ablation_steps:
            for td in hp.ablation_tds:
                key = f"{hp.sampler}_{steps}steps_td{td:g}"
                if steps == hp.sample_steps and td == hp.td:
                    continue
                print(f"analyse: {n} samples ({hp.sampler.upper()}, {steps} steps, td = {td:g})", flush=True)
                runs[key] = self.sample(n, steps, td, seed=hp.seed)
        main = next(iter(runs))
        figures = {}
        if folder is not None:
            panels = {f"Bit Diffusion ({label})": runs[main][:100]}
            if datamodule is not None:
                datamodule.setup("test")
                test = datamodule.test_set
                panels["test images"] = test.__getitems__(list(range(min(100, len(test)))))[0]
            path = sample_grids(panels, folder / "samples.png",
                                title=f"Bit Diffusion samples from noise ({hp.code} analog bits, "
                                      f"self-conditioning {'on' if hp.self_condition else 'off'})")
            figures[path.name] = path
        if hp.fid_features is None or datamodule is None:
            return {"figures": figures}
        fids = fid_to_test_set(hp.fid_features, datamodule, runs, hp.fid_samples)
        metrics = {f"fid_zoo_cnn/{name}": v for name, v in fids.items()}
        real = datamodule.test_set
        rows = [f"| samples ({hp.fid_samples} each, vs the {len(real)} test images) | FID (zoo FMNIST CNN features) |",
                "|---|---|"]
        for name in runs:
            rows.append(f"| {name.replace('_', ', ')} | {metrics[f'fid_zoo_cnn/{name}']:.2f} |")
        rows.append(f"| held-out real images (validation split): the floor | "
                    f"{metrics['fid_zoo_cnn/real_heldout']:.2f} |")
        title = (f"FID with the penultimate features of the zoo classifier {hp.fid_features} (not Inception; "
                 "lower is better)")
        return {"metrics": metrics, "figures": figures, "tables": {title: "\n".join(rows)}}
