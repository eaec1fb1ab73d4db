"""Lightning glue for Pix2seq detection: sequences built from each batch's boxes (tokenizer.py), the weighted
next-token loss, the official optimiser (AdamW, linear warm-up then linear decay), and detection by nucleus sampling
with the key/value cache."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.data.coco import boxes_to_pixels
from zoo.models.pix2seq.model import Pix2Seq
from zoo.models.pix2seq.tokenizer import (BASE_VOCAB_SHIFT, DETECTION_TASK, Corruption, add_noise_objects,
                                          build_sequences, decode_objects, pad_objects, sequence_loss)


def warmup_linear(total_steps: int, warmup_steps: int, end_factor: float):
    """LambdaLR factor: linear warm-up from 0 over `warmup_steps`, then linear decay to `end_factor` at
    `total_steps` (the official "linear" schedule)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        done = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1 - (1 - end_factor) * done

    return factor


@register_model("pix2seq")
class Pix2SeqDetector(ZooModule):
    """Pix2seq object detection (arXiv 2109.10852): objects read out as [ymin, xmin, ymax, xmax, class] tokens.

    Batches are (images [B, 3, S, S] in [0, 1], targets) as `zoo.data.coco.COCODetectionDataModule` makes them.
    Training shuffles each image's objects, pads the sequence with noise objects and corrupts the input class tokens
    (§2.3); detection samples `max_instances_test` x 5 tokens with nucleus sampling.

    Args:
        backbone ... drop_att, feature_stage, patch_size: the network (see `Pix2Seq`; defaults: the official
            "resnet" variant).
        image_size: side of the square input (the data's image_size).
        quantization_bins, coord_vocab_shift: coordinate bins and the token of bin 0 (official: 1000 and 1000;
            class tokens are 100 + category id, so category ids must stay below coord_vocab_shift - 100).
        max_instances, max_instances_test: objects per training sequence (real then noise) and per detection.
        noise_bbox_weight, eos_token_weight: loss weights of noise objects' FAKE class tokens and of end/padding
            tokens (official: 1.0 and 0.1).
        class_label_corruption: how input class tokens are corrupted (official: "rand_n_fake_cls").
        sequence_augmentation: pad training sequences with noise objects (§2.3); False is the paper's ablation
            without it: the real objects, then end tokens.
        top_k, top_p, temperature: sampling at detection (official: 0, 0.4, 1.0).
        evaluate_ap: also detect every validation/test image and log COCO box AP (torchmetrics
            MeanAveragePrecision with the pycocotools backend: `pip install pycocotools`) as val/map, val/map_50, ...
        lr, weight_decay, beta1, beta2, eps: AdamW on all parameters (fine-tuning config: 3e-5, 0.05, 0.9, 0.95, 1e-8).
        warmup_epochs, end_lr_factor: linear warm-up epochs, then linear decay to end_lr_factor x lr (2, 0.01).
        weights: a zoo checkpoint to start from, loaded now; not saved as a hyperparameter.
        pretrained: a Pix2seq detection release (catalogue name, folder or hf-hub:) whose weights start this model,
            as fine-tuning starts from a pre-trained detector; loaded strictly when fitting starts (before a resumed
            run restores its checkpoint), so the recipe builds before it exists and a release of this model loads
            without it. Not saved as a hyperparameter.
    """

    def __init__(self, backbone: str = "resnet50", image_size: int = 640, num_encoder_layers: int = 6,
                 dim_att: int = 256, dim_mlp: int = 1024, num_heads: int = 8, num_decoder_layers: int = 6,
                 dim_att_dec: int = 256, dim_mlp_dec: int = 1024, num_heads_dec: int = 8, vocab_size: int = 3000,
                 max_seq_len: int = 512, drop_path: float = 0.1, drop_units: float = 0.1, drop_att: float = 0.0,
                 feature_stage: int = 4, patch_size: int = 16, quantization_bins: int = 1000,
                 coord_vocab_shift: int = 1000, max_instances: int = 100, max_instances_test: int = 100,
                 noise_bbox_weight: float = 1.0, eos_token_weight: float = 0.1,
                 class_label_corruption: Corruption = "rand_n_fake_cls", sequence_augmentation: bool = True,
                 top_k: int = 0, top_p: float = 0.4, temperature: float = 1.0, evaluate_ap: bool = True,
                 lr: float = 3e-5, weight_decay: float = 0.05, beta1: float = 0.9, beta2: float = 0.95,
                 eps: float = 1e-8, warmup_epochs: float = 2.0, end_lr_factor: float = 0.01,
                 weights: str | None = None, pretrained: str | None = None):
        super().__init__()
        if coord_vocab_shift + quantization_bins > vocab_size:
            raise ValueError(f"coordinate tokens reach {coord_vocab_shift + quantization_bins - 1}, beyond the "
                             f"vocabulary of {vocab_size}: raise vocab_size or lower quantization_bins")
        if 5 * max(max_instances, max_instances_test) + 1 > max_seq_len + 1:
            raise ValueError(f"max_seq_len {max_seq_len} cannot hold 5 tokens for each of "
                             f"{max(max_instances, max_instances_test)} objects")
        self.save_hyperparameters(ignore=["weights", "pretrained"])
        self.defer_pretrained(pretrained, weights, "a detector to fine-tune")
        self.model = Pix2Seq(backbone, num_encoder_layers, dim_att, dim_mlp, num_heads, num_decoder_layers,
                             dim_att_dec, dim_mlp_dec, num_heads_dec, vocab_size, max_seq_len, drop_path, drop_units,
                             drop_att, feature_stage, patch_size)
        self.ap: nn.ModuleDict | None = None
        self.init_weights_from(weights)

    def setup(self, stage: str) -> None:
        """The AP metrics are made here, not in __init__, so loading a release for inference needs no COCO tools;
        `pretrained` is loaded here when fitting starts."""
        if stage == "fit" and (source := self.take_pretrained()):
            self.init_weights_from(source)
        if self.hparams.evaluate_ap and self.ap is None:
            from torchmetrics.detection import MeanAveragePrecision

            self.ap = nn.ModuleDict({s: MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
                                     for s in ("val", "test")})

    def forward(self, images: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits [B, T, V] for input tokens [B, T] (default: the detection prompt alone)."""
        if tokens is None:
            tokens = torch.full((len(images), 1), DETECTION_TASK, dtype=torch.long, device=images.device)
        return self.model(images, tokens)

    def _check_labels(self, labels: list[torch.Tensor]) -> None:
        top = max((int(lb.max()) for lb in labels if len(lb)), default=0)
        if top + BASE_VOCAB_SHIFT >= self.hparams.coord_vocab_shift:
            raise ValueError(f"category id {top} has no class token below coord_vocab_shift "
                             f"{self.hparams.coord_vocab_shift}; raise coord_vocab_shift (and vocab_size)")

    def sequences(self, targets: list[dict[str, torch.Tensor]], train: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input, target, weights) for a batch's targets: with train, shuffled objects, noise objects and
        corrupted input classes; otherwise the objects in their stored order, end tokens, no corruption."""
        hp = self.hparams
        labels = [t["labels"] for t in targets]
        self._check_labels(labels)
        boxes, labels, counts = pad_objects([t["boxes"] for t in targets], labels, hp.max_instances, shuffle=train)
        if train and hp.sequence_augmentation:
            boxes, labels = add_noise_objects(boxes, labels, counts)
        return build_sequences(boxes, labels, hp.quantization_bins, hp.coord_vocab_shift, hp.max_seq_len,
                               hp.noise_bbox_weight, hp.eos_token_weight,
                               hp.class_label_corruption if train else "none")

    def loss(self, images: torch.Tensor, targets: list[dict], train: bool) -> torch.Tensor:
        inputs, target, weights = self.sequences(targets, train)
        return sequence_loss(self(images, inputs), target, weights)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        loss = self.loss(images, targets, train=True)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=len(images))
        return loss

    def evaluate(self, batch, stage: str) -> None:
        """Teacher-forced loss on the real objects; with evaluate_ap, detections scored against the annotations in
        the original image's pixels (crowd regions and COCO areas as the COCO evaluator uses them)."""
        images, targets = batch
        self.log(f"{stage}/loss", self.loss(images, targets, train=False), prog_bar=stage == "val", sync_dist=True,
                 batch_size=len(images), add_dataloader_idx=False)
        if self.ap is not None:
            size = self.hparams.image_size
            preds = self.predict_step(batch, 0)
            truth = [{"boxes": boxes_to_pixels(t["boxes"], t, size), "labels": t["labels"],
                      "iscrowd": t["iscrowd"].long(), "area": t["area"]} for t in targets]
            self.ap[stage].update([{k: p[k] for k in ("boxes", "scores", "labels")} for p in preds], truth)

    def log_ap(self, stage: str) -> None:
        if self.ap is not None:
            result = self.ap[stage].compute()  # already reduced over ranks
            self.log_dict({f"{stage}/{k}": result[k].float() for k in ("map", "map_50", "map_75", "mar_100")},
                          add_dataloader_idx=False)
            self.ap[stage].reset()

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_ap("val")

    def on_test_epoch_end(self) -> None:
        self.log_ap("test")

    @torch.no_grad()
    def detect(self, images: torch.Tensor, generator: torch.Generator | None = None, objects: int | None = None,
               memory: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(boxes [B, N, 4] normalised yxyx in the input image, category ids [B, N], scores [B, N]) for
        N = `objects` (default max_instances_test) sampled objects per image (the official `infer` +
        `decode_object_seq_to_bbox`); `memory`: the images already encoded."""
        hp = self.hparams
        prompt = torch.full((len(images), 1), DETECTION_TASK, dtype=torch.long, device=images.device)
        tokens, logits = self.model.generate(images, prompt, 5 * (objects or hp.max_instances_test) + 1,
                                             hp.temperature, hp.top_k, hp.top_p, generator, memory=memory)
        return decode_objects(logits, tokens, hp.quantization_bins, hp.coord_vocab_shift)

    def predict_step(self, batch, batch_idx) -> list[dict[str, Any]]:
        """Per image: `image_id`, `boxes` [N, 4] as [xmin, ymin, xmax, ymax] pixels of the original image,
        `labels` (category ids) and `scores`."""
        images, targets = batch
        boxes, labels, scores = self.detect(images)
        return [{"image_id": t["image_id"], "boxes": boxes_to_pixels(b, t, self.hparams.image_size),
                 "labels": lb, "scores": s} for b, lb, s, t in zip(boxes, labels, scores, targets)]

    def release_figures(self, folder, datamodule=None, images: int = 8, min_score: float = 0.3) -> dict:
        """The first `images` test images with their sampled detections (score >= min_score; class name and
        score) in colour and the annotated boxes in white."""
        if datamodule is None:
            return {}
        datamodule.setup("test")
        return self.detection_figure(folder, next(iter(datamodule.test_dataloader())),
                                     getattr(datamodule, "categories", {}) or {}, images, min_score)

    def detection_figure(self, folder, batch, names: dict[int, str], images: int = 8, min_score: float = 0.3
                         ) -> dict:
        """detections.png of `release_figures` from one test batch (`names`: category id -> name)."""
        from pathlib import Path

        from zoo._plots import _pyplot, _save

        images_, targets = batch[0][:images], batch[1][:images]
        self.eval()
        with torch.no_grad():
            boxes, labels, scores = self.detect(images_.to(self.device), torch.Generator(self.device).manual_seed(0))
        size = self.hparams.image_size
        plt = _pyplot()
        cols = min(4, len(images_))
        rows = -(-len(images_) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
        for ax, im, t, b, lb, sc in zip(axes.flat, images_, targets, boxes.cpu(), labels.cpu(), scores.cpu()):
            ax.imshow(im.permute(1, 2, 0).numpy())
            for y0, x0, y1, x1 in (t["boxes"] * size).tolist():
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", lw=0.8, ls="--"))
            for (y0, x0, y1, x1), c, s in zip((b * size).tolist(), lb.tolist(), sc.tolist()):
                if s >= min_score and c > 0:
                    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.2))
                    ax.text(x0, y0, f"{names.get(c, c)} {s:.2f}", color="yellow", fontsize=6, va="bottom")
        for ax in axes.flat:
            ax.axis("off")
        path = _save(fig, Path(folder) / "detections.png",
                     f"Test images: sampled detections with score >= {min_score} (yellow), annotations (white, dashed)")
        return {path.name: path}

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps,
                                weight_decay=hp.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        warmup = int(hp.warmup_epochs * total / epochs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_linear(total, warmup, hp.end_lr_factor))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
