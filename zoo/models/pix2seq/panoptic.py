"""Pix2Seq-D's Lightning module: training with the analog-bit diffusion loss (panoptic_model.py), an exponential
moving average of the whole network (encoder, fusion and denoiser, batch-norm statistics included) that evaluation,
sampling and releases use, and panoptic quality on the original images.

Evaluation, as the official task: masks sampled by DDIM (`sample_steps` 20, td 1) from the EMA network, cut to the
image's unpadded part, resized (nearest) to the original size, majority-voted per identity with segments under
`min_pixels` (40) pixels made void, then PQ / SQ / RQ against the annotated map (void pixels ignored, predicted void
allowed; zoo.metrics.PanopticQuality, which counts as the reference panopticapi does). `analyse` repeats the sampling over a grid of step counts and time differences (the paper's ablations).
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.metrics import PanopticQuality
from zoo.models.pix2seq.module import warmup_linear
from zoo.models.pix2seq.panoptic_model import BITS, Pix2SeqD, majority_vote


@register_model("pix2seq-d")
class Pix2SeqPanoptic(ZooModule):
    """Pix2Seq-D panoptic segmentation (ICCV 2023). Batches are (images [B, 3, S, S], targets) as
    `zoo.data.COCOPanopticDataModule` (or the scene one) makes them.

    Args:
        backbone ... mask_weight_p: the network (`Pix2SeqD`; defaults: the paper's COCO model).
        things, stuffs: the category ids scored as things and as stuff (None: read from the DataModule's
            categories when the model first sets up, then kept with the model).
        sample_steps, td, min_pixels: evaluation sampling and post-processing (20, 1.0, 40).
        ablation_steps, ablation_tds, ablation_images: `analyse`'s grid and the test images it samples.
        lr, weight_decay, beta1, beta2, eps, warmup_epochs, end_lr_factor: AdamW with a linear warm-up and linear
            decay to end_lr_factor x lr (official: 1e-4, 0.05, 0.9, 0.999, 1e-8, 5 epochs, 0.1; clip the gradient
            norm at 1.0 with the Trainer's gradient_clip_val).
        ema_decay: the moving average's decay (0.999).
        encoder_from: a Pix2seq release (catalogue name or folder; detection "pix2seq" or multi-task "pix2seq-v2")
            whose image encoder (ResNet to stride 16, projection, transformer encoder) starts this model's encoder,
            as the paper starts from a Pix2seq Objects365 checkpoint. Loaded when fitting starts (every tensor
            mapped, every shape checked), so a release of this model loads without it.
        evaluate_pq: sample masks in validation and testing and score them (off: the loss only).
        seed: the noise of the evaluation loss and of sampling.
    """

    def __init__(self, backbone: str = "resnet50", num_encoder_layers: int = 12, dim_att: int = 512,
                 dim_mlp: int = 2048, num_heads: int = 16, drop_path: float = 0.1, drop_units: float = 0.1,
                 image_size: int = 1024, mask_size: int = 512, fuse_dim: int = 256, dim: int = 128,
                 channel_mult: list[int] = [1, 1, 2, 2], num_res_blocks: list[int] = [1, 1, 1, 1],
                 dropout: float = 0.0, transformer_layers: int = 6, transformer_heads: int = 8,
                 transformer_mlp: int = 2048, b_scale: float = 0.1, max_instances: int = 101,
                 time_scaling: float = 1000.0, mask_weight_p: float = 0.2, things: list[int] | None = None,
                 stuffs: list[int] | None = None, sample_steps: int = 20, td: float = 1.0, min_pixels: int = 40,
                 ablation_steps: list[int] = [], ablation_tds: list[float] = [], ablation_images: int = 200,
                 lr: float = 1e-4, weight_decay: float = 0.05, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, warmup_epochs: float = 5.0, end_lr_factor: float = 0.1, ema_decay: float = 0.999,
                 evaluate_pq: bool = True, seed: int = 0, encoder_from: str | None = None,
                 weights: str | None = None):
        super().__init__()
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if sample_steps < 1 or td < 0:
            raise ValueError(f"sample_steps must be >= 1 and td >= 0, got {sample_steps} and {td}")
        self.save_hyperparameters(ignore=["weights", "encoder_from"])  # a release loads without its start
        self._encoder_from = encoder_from   # read when fitting starts (start_encoder)
        self.model = Pix2SeqD(backbone, num_encoder_layers, dim_att, dim_mlp, num_heads, drop_path, drop_units,
                              image_size, mask_size, fuse_dim, dim, channel_mult, num_res_blocks, dropout,
                              transformer_layers, transformer_heads, transformer_mlp, b_scale, max_instances,
                              time_scaling, mask_weight_p)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.pq = None
        self.init_weights_from(weights)

    @property
    def num_classes(self) -> int:
        ids = [*(self.hparams.things or ()), *(self.hparams.stuffs or ())]
        return max(ids) + 1 if ids else 2**BITS

    # ---------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        images, targets = batch
        panoptic = torch.stack([t["panoptic"] for t in targets]).to(self.device)
        loss = self.model.loss(images, panoptic)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Pix2Seq-D step {self.global_step}: the loss is {float(loss)}; lower lr or "
                                     "lengthen the warm-up.")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        d = self.hparams.ema_decay
        torch._foreach_lerp_(list(self.ema.parameters()), [p.detach() for p in self.model.parameters()], 1 - d)
        for e, b in zip(self.ema.buffers(), self.model.buffers()):
            if e.is_floating_point():
                e.lerp_(b, 1 - d)
            else:
                e.copy_(b)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.model.parameters(), lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps,
                                weight_decay=hp.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, warmup_linear(total, int(hp.warmup_epochs * total / epochs), hp.end_lr_factor))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---------------------------------------------------------------- inference
    def start_encoder(self) -> None:
        """Load `encoder_from` into the image encoder of the network and of its EMA (once; called when fitting
        starts, before a resumed run restores its checkpoint)."""
        from zoo._hub import load_state_strict, resolve
        from zoo._registry import model_class

        source, self._encoder_from = self._encoder_from, None
        if not source:
            return
        src = resolve(source)
        if src.model not in ("pix2seq", "pix2seq-v2"):
            raise ValueError(f"encoder_from={source!r} is a {src.model!r} model; it must be a Pix2seq release "
                             "(detection 'pix2seq' or multi-task 'pix2seq-v2') whose encoder matches this one")
        args = {**{k: v.default for k, v in inspect.signature(model_class(src.model)).parameters.items()},
                **src.init_args}
        hp = self.hparams
        wanted = {"backbone": hp.backbone, "feature_stage": 3, "num_encoder_layers": hp.num_encoder_layers,
                  "dim_att": hp.dim_att, "dim_mlp": hp.dim_mlp, "num_heads": hp.num_heads}
        differ = [f"{k}: {args.get(k)!r} there, {v!r} here" for k, v in wanted.items() if args.get(k) != v]
        if differ:
            raise ValueError(f"encoder_from={source!r} has another image encoder ({'; '.join(differ)}): Pix2Seq-D "
                             "encodes the stride-16 map (a Pix2seq trained with feature_stage=3, the official "
                             "'resnet-c'), so pick such a release or set this model's encoder sizes to match")
        keep = ("backbone.", "stem_projection.", "stem_ln.", "encoder.", "encoder_ln.")
        load_state_strict(self.model.encoder, {k[len("model."):]: v for k, v in src.state.items()
                                               if k.startswith("model.") and k[len("model."):].startswith(keep)})
        self.ema.encoder.load_state_dict(self.model.encoder.state_dict())

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.start_encoder()
        hp = self.hparams
        if hp.things is None and hp.stuffs is None and self._trainer is not None:
            categories = getattr(getattr(self.trainer, "datamodule", None), "categories", None)
            if categories:
                hp.things = sorted(k for k, c in categories.items() if c["isthing"])
                hp.stuffs = sorted(k for k, c in categories.items() if not c["isthing"])
        if hp.evaluate_pq and self.pq is None and (hp.things or hp.stuffs):
            self.pq = torch.nn.ModuleDict({s: PanopticQuality(hp.things or [], hp.stuffs or [])
                                           for s in ("val", "test")})

    @torch.no_grad()
    def segment(self, images: torch.Tensor, targets: list[dict], steps: int | None = None, td: float | None = None,
                generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Panoptic maps [2, H, W] (semantic, identity) at each image's original size, sampled from the EMA
        network and majority-voted."""
        hp = self.hparams
        self.ema.eval()
        maps = self.ema.sample(images, hp.sample_steps if steps is None else steps, hp.td if td is None else td,
                               self.num_classes, generator)
        out = []
        for m, t in zip(maps, targets):
            uh, uw = (-(-t["unpadded_size"] * hp.mask_size // hp.image_size)).tolist()
            h, w = t["orig_size"].tolist()
            full = F.interpolate(m[None, :, :uh, :uw].float(), size=(h, w), mode="nearest")[0].long()
            out.append(torch.stack(majority_vote(full[0], full[1], self.num_classes, hp.min_pixels)))
        return out

    def forward(self, images: torch.Tensor, panoptic: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """The EMA network's loss on images with their mask-size panoptic maps, at one fixed draw of times and noise."""
        g = torch.Generator(device=images.device).manual_seed(self.hparams.seed if seed is None else seed)
        return self.ema.loss(images, panoptic, g)

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        images, targets = batch
        panoptic = torch.stack([t["panoptic"] for t in targets]).to(self.device)
        self.ema.eval()
        loss = self(images, panoptic, self.hparams.seed * 1_000_003 + batch_idx)
        self.log(f"{stage}/loss", loss, sync_dist=True, prog_bar=stage == "val", batch_size=len(images))
        if self.pq is not None:
            g = torch.Generator(device=self.device).manual_seed(self.hparams.seed + batch_idx)
            for pred, t in zip(self.segment(images, targets, generator=g), targets):
                self.pq[stage].update(pred.permute(1, 2, 0)[None], t["orig_panoptic"].to(pred).permute(1, 2, 0)[None])

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    def _log_pq(self, stage: str) -> None:
        if self.pq is None:
            return
        self.log_dict({f"{stage}/{k}": v.float() for k, v in self.pq[stage].compute().items()})
        self.pq[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_pq("val")

    def on_test_epoch_end(self) -> None:
        self._log_pq("test")

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        images, targets = batch
        return [{"image_id": t["image_id"], "panoptic": m} for t, m in zip(targets, self.segment(images, targets))]

    # ---------------------------------------------------------------- the paper's ablations and the card's picture
    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """PQ of the first `ablation_images` test images at each (steps, td) of the ablation grid, and of a map that
        gives every pixel the stuff class most of their annotated pixels have (`test/pq_one_stuff`: the floor a
        model must beat to have segmented anything)."""
        hp = self.hparams
        if datamodule is None or not hp.ablation_steps or not hp.ablation_tds:
            return {}
        datamodule.setup("test")
        batches, n = [], 0
        for images, targets in datamodule.test_dataloader():
            batches.append((images, targets))
            n += len(images)
            if n >= hp.ablation_images:
                break
        metrics, rows = {}, []
        for steps in hp.ablation_steps:
            for td in hp.ablation_tds:
                print(f"analyse: PQ with {steps} steps, td = {td:g}", flush=True)
                pq = PanopticQuality(hp.things or [], hp.stuffs or [])
                g = torch.Generator(device=self.device).manual_seed(hp.seed)
                for images, targets in batches:
                    for p, t in zip(self.segment(images.to(self.device), targets, steps, td, g), targets):
                        pq.update(p.permute(1, 2, 0)[None].cpu(), t["orig_panoptic"].permute(1, 2, 0)[None])
                value = float(pq.compute()["pq"])
                metrics[f"test/pq_{steps}steps_td{td:g}"] = value
                rows.append(f"| {steps} | {td:g} | {value:.4f} |")
        if hp.stuffs:
            truths = [t["orig_panoptic"] for _, targets in batches for t in targets]
            counts = torch.stack([torch.bincount(t[0].flatten(), minlength=self.num_classes) for t in truths]).sum(0)
            stuff = max(hp.stuffs, key=lambda c: int(counts[c]))
            floor = PanopticQuality(hp.things or [], hp.stuffs)
            for t in truths:
                flat = torch.zeros_like(t)
                flat[0] = stuff
                floor.update(flat.permute(1, 2, 0)[None], t.permute(1, 2, 0)[None])
            metrics["test/pq_one_stuff"] = float(floor.compute()["pq"])
            rows.append(f"| every pixel class {stuff} | – | {metrics['test/pq_one_stuff']:.4f} |")
        table = "| steps | td | PQ |\n|---|---|---|\n" + "\n".join(rows)
        return {"metrics": metrics, "tables": {f"PQ on {n} test images by sampling steps and td": table}}

    def release_figures(self, folder, datamodule=None, images: int = 8) -> dict:
        """panoptic.png: test images beside their sampled and annotated panoptic maps (one colour per segment)."""
        if datamodule is None:
            return {}
        from zoo._plots import _pyplot, _save

        datamodule.setup("test")
        batch_images, targets = next(iter(datamodule.test_dataloader()))
        batch_images, targets = batch_images[:images].to(self.device), targets[:images]
        maps = self.segment(batch_images, targets, generator=torch.Generator(device=self.device).manual_seed(0))
        plt = _pyplot()
        fig, axes = plt.subplots(3, len(maps), figsize=(2.2 * len(maps), 6.8), squeeze=False)
        palette = torch.rand(256 * 256, 3, generator=torch.Generator().manual_seed(1))
        palette[0] = 0
        for j, (im, t, m) in enumerate(zip(batch_images.cpu(), targets, maps)):
            uh, uw = t["unpadded_size"].tolist()
            axes[0, j].imshow(im[:, :uh, :uw].permute(1, 2, 0).numpy())
            for row, pan in ((1, m.cpu()), (2, t["orig_panoptic"])):
                axes[row, j].imshow(palette[pan[0] * 256 + pan[1]].numpy(), interpolation="nearest")
        for ax, label in zip(axes[:, 0], ("image", "sampled", "annotated")):
            ax.set_ylabel(label)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        path = _save(fig, Path(folder) / "panoptic.png",
                     f"Test images: panoptic maps sampled ({self.hparams.sample_steps} DDIM steps, "
                     f"td = {self.hparams.td:g}) and annotated; one colour per segment")
        return {path.name: path}
