"""Pix2seq v2 (Chen, Saxena, Li, Lin, Fleet, Hinton, "A Unified Sequence Interface for Vision Tasks", NeurIPS 2022;
google-research/pix2seq `models/model.py` `train_step`, `tasks/instance_segmentation.py`,
`tasks/keypoint_detection.py`, `configs/config_multi_task.py`): one Pix2seq network for several tasks, told apart by
the prompt token (tasks.py, captions.py).

Training follows the official multi-task step: each task draws its own batch (the DataModule's loaders, one per task),
each task's loss is the weighted token cross-entropy of its sequences, and the step's loss is the sum of the task
losses times their weights. The instance tasks decode one sequence per object, the image encoded once and its memory
repeated for the image's objects.

Inference, as the released multi-task config runs it: detection as Pix2seq does (top-p 0.4); instance segmentation and
keypoints prompted with the annotated boxes (the config's `use_gt_box_at_test` path, so their AP measures the mask and
keypoint readout, not detection), or prompted with the model's own detections, their classes and scores
(`instance_boxes="detected"`, `keypoint_boxes="detected"`: what the official README's evaluation feeds that path).
Keypoints on detected boxes follow the official unbatch-and-crop: each detection of `keypoint_category` cut from the
image widened by `crop_pad_scale` of its size on each side, resized and padded as an evaluation image, prompted with its
box in the crop and its class, its points moved back into the image, and every detection of an image matched among all
the image's annotated objects (COCO's keypoint evaluation). The crops are cut from the model's input (the image resized
to fit `image_size`: the original pixels where its longer side is `image_size`, as most COCO images' is at 640; the
official code cuts the original). Instance segmentation samples `ensemble_num_samples` (8) polygon sequences per object
with top-p 0.8, rasterises each, averages them and keeps pixels above 0.5; its score is the box's (1 for an annotated
box); the annotated masks it is scored against are the annotations' polygons as read (at most `max_points` points, where
COCO's evaluator draws the full polygons). Keypoints sample once with top-p 0.1; a sampled invisible token is redrawn
with the invisible token suppressed, a point still invisible goes to the box's centre, and the score is the mean
probability of the sampled tokens (`points_score_weight` 1). Captioning samples the whole caption at top-p 1.0 and is
scored with corpus BLEU-4 against all of the image's captions (torchmetrics' BLEUScore, the closest reference length for
the brevity penalty as COCO's evaluation; on lower-cased words without punctuation, not COCO's PTB tokenizer). The
caption tokenizer is trained on the DataModule's training captions when a model without one first sets up, and kept in
the model (`caption_tokenizer`, its serialised bytes), so releases and checkpoints carry it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo._registry import register_model
from zoo.data.coco import load_image, points_to_pixels
from zoo.models.pix2seq.captions import (CAPTIONING_TASK, CaptionTokenizer, caption_training_sequences,
                                         caption_words, tokens_to_pieces, train_tokenizer)
from zoo.models.pix2seq.module import Pix2SeqDetector
from zoo.models.pix2seq.tasks import (INSTANCE_SEGMENTATION_TASK, INVISIBLE_FLOAT, INVISIBLE_TOKEN, KEYPOINT_TASK,
                                      PADDING_FLOAT, SEPARATOR_FLOAT, instance_prompt, instance_training_sequences,
                                      points_to_tokens, tokens_to_points)
from zoo.models.pix2seq.tokenizer import PADDING_TOKEN, sequence_loss, top_p_logits

TASK_IDS = {"instance_segmentation": INSTANCE_SEGMENTATION_TASK, "keypoints": KEYPOINT_TASK}
#: COCO's per-keypoint OKS constants (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles)
COCO_SIGMAS = (.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089)


def pad_instances(targets: list[dict[str, torch.Tensor]], key: str, m: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first m objects of each image in their stored order (official: ordered by score, ties kept) as boxes
    [B, m, 4], labels [B, m] (0: empty slot) and points [B, m, 2P] (PADDING_FLOAT in empty slots)."""
    width = targets[0][key].shape[-1]
    boxes = torch.zeros(len(targets), m, 4)
    labels = torch.zeros(len(targets), m, dtype=torch.long)
    points = torch.full((len(targets), m, width), PADDING_FLOAT)
    for i, t in enumerate(targets):
        n = min(m, len(t["labels"]))
        boxes[i, :n], labels[i, :n], points[i, :n] = t["boxes"][:n], t["labels"][:n], t[key][:n]
    return boxes, labels, points


def polygons_from_points(points: torch.Tensor) -> list[list[float]]:
    """Decoded points [2P] (x, y pixels after `points_to_pixels`, flattened) -> COCO polygons: split at separator
    pairs, cut at the first padding pair, parts with fewer than 3 points dropped."""
    out, current = [], []
    for x, y in points.view(-1, 2).tolist():
        if x == PADDING_FLOAT or y == PADDING_FLOAT:
            break
        if x == SEPARATOR_FLOAT or y == SEPARATOR_FLOAT or x == INVISIBLE_FLOAT or y == INVISIBLE_FLOAT:
            if len(current) >= 6:
                out.append(current)
            current = []
            continue
        current += [x, y]
    if len(current) >= 6:
        out.append(current)
    return out


def rasterise(polygons: list[list[float]], height: int, width: int) -> torch.Tensor:
    """COCO polygons -> a boolean mask [height, width] as pycocotools draws them (COCO's own evaluation)."""
    from pycocotools import mask as mask_utils

    if not polygons:
        return torch.zeros(height, width, dtype=torch.bool)
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return torch.from_numpy(mask_utils.decode(rle).astype(bool))


def top_detections(boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, m: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's m highest-scoring detections [B, m, ...], best first (ties keep the sampling order), slots
    decoded as no object (label 0) after every detection; fewer than m are padded with empty slots (label 0, score
    0, a zero box)."""
    if scores.shape[1] < m:
        pad = m - scores.shape[1]
        boxes, labels, scores = (F.pad(boxes, (0, 0, 0, pad)), F.pad(labels, (0, pad)), F.pad(scores, (0, pad)))
    rank = torch.where(labels > 0, scores.float(), float("-inf"))  # slots decoded as nothing go last
    order = torch.argsort(rank, dim=1, descending=True, stable=True)[:, :m]
    return (boxes.gather(1, order[..., None].expand(-1, -1, boxes.shape[-1])), labels.gather(1, order),
            scores.gather(1, order))


@register_model("pix2seq-v2")
class Pix2SeqMultiTask(Pix2SeqDetector):
    """Pix2seq v2: detection, instance segmentation, keypoints and captioning from one network (see the module
    docstring).

    Batches: {task: (images, targets)} in training, one loader per task in evaluation, as
    `zoo.data.COCODetectionDataModule(tasks=...)` (or the scene DataModule) makes them.

    Args:
        tasks: the tasks trained and evaluated, in the DataModule's order.
        task_weights: each task's loss weight (None: 1 each, as the released config).
        max_points_per_object: polygon points per object (official 128); the keypoint count is `num_keypoints`.
        num_keypoints: keypoints per object (COCO person: 17).
        max_instances_per_image_seg: objects per image in instance segmentation (official 10).
        seg_eos_token_weight, kpt_eos_token_weight, invisible_token_weight: the instance tasks' weights of padding
            targets (official 1.0 and 0.0) and of invisible-keypoint targets (0.1).
        seg_top_p, kpt_top_p: nucleus sampling of the instance tasks (0.8, 0.1); detection keeps `top_p` (0.4).
        ensemble_num_samples, ensemble_threshold: polygon samples averaged per object (8) and the kept fraction (0.5).
        ensemble_inclusive: a pixel covered by exactly `ensemble_threshold` of the samples is kept (the official
            `greater_equal`); False keeps only those above it (the scene entries were measured so).
        keypoint_sigmas: OKS constants per keypoint (None: COCO's 17).
        instance_boxes: what instance segmentation is prompted with at test: "annotated" (the annotated boxes, score
            1: the mask readout alone) or "detected" (the model's own detections, with their classes and scores: the
            official README's evaluation).
        detected_prompts: which detections prompt the instance tasks: "top", the max_instances_per_image_seg
            highest-scoring of max_instances_test sampled objects (the official evaluation reorders the saved
            detections by score and keeps the first); "first", the first max_instances_per_image_seg sampled (the
            scene entries were measured so).
        keypoint_boxes: what keypoints are prompted with at test: "annotated" (one crop per annotated object, made
            by the data) or "detected" (the model's own detections of `keypoint_category` on whole images, each
            cropped here; the data must give whole images: `keypoint_eval_images=True`).
        keypoint_category: the category whose detections get keypoints (COCO: 1, person; None: every category).
        crop_pad_scale: how far a detected box is widened on each side, as a share of its size, before cropping
            (official 0.5).
        text_vocab_shift: where caption pieces start in the vocabulary (official 3000); vocab_size must hold the
            shift plus the caption tokenizer's pieces.
        caption_max_len, captions_per_image: caption tokens per sequence (official 128) and captions per image in
            training (5).
        caption_eos_token_weight, input_seq_drop_rate, caption_top_p: the end token's weight (0.1), the share of
            input tokens replaced by the fake text token in training (0.5), nucleus sampling of captions (1.0).
        caption_vocab_size: the most pieces of the caption tokenizer trained on the data (official: 32k, C4).
        other arguments: as `Pix2SeqDetector` (max_seq_len must hold 2 max_points_per_object + 6 tokens).
    """

    data_shaped_keys = ("caption_tokenizer",)

    def __init__(self, tasks: list[str] = ("detection", "instance_segmentation", "keypoints"),
                 task_weights: list[float] | None = None, max_points_per_object: int = 128, num_keypoints: int = 17,
                 max_instances_per_image_seg: int = 10, seg_eos_token_weight: float = 1.0,
                 kpt_eos_token_weight: float = 0.0, invisible_token_weight: float = 0.1, seg_top_p: float = 0.8,
                 kpt_top_p: float = 0.1, ensemble_num_samples: int = 8, ensemble_threshold: float = 0.5,
                 ensemble_inclusive: bool = True, detected_prompts: str = "top",
                 keypoint_sigmas: list[float] | None = None, instance_boxes: str = "annotated",
                 keypoint_boxes: str = "annotated", keypoint_category: int | None = 1, crop_pad_scale: float = 0.5,
                 text_vocab_shift: int = 3000, caption_max_len: int = 128,
                 captions_per_image: int = 5, caption_eos_token_weight: float = 0.1,
                 input_seq_drop_rate: float = 0.5, caption_top_p: float = 1.0, caption_vocab_size: int = 32000,
                 backbone: str = "vit",
                 image_size: int = 640, num_encoder_layers: int = 12, dim_att: int = 768, dim_mlp: int = 3072,
                 num_heads: int = 12, num_decoder_layers: int = 6, dim_att_dec: int = 512, dim_mlp_dec: int = 2048,
                 num_heads_dec: int = 16, vocab_size: int = 3000, max_seq_len: int = 512, drop_path: float = 0.1,
                 drop_units: float = 0.1, drop_att: float = 0.0, feature_stage: int = 4, patch_size: int = 16,
                 quantization_bins: int = 1000, coord_vocab_shift: int = 1000, max_instances: int = 100,
                 max_instances_test: int = 100, noise_bbox_weight: float = 1.0, eos_token_weight: float = 0.1,
                 class_label_corruption: str = "rand_n_fake_cls", sequence_augmentation: bool = True,
                 top_k: int = 0, top_p: float = 0.4, temperature: float = 1.0, evaluate_ap: bool = True,
                 lr: float = 1e-4, weight_decay: float = 0.05, beta1: float = 0.9, beta2: float = 0.95,
                 eps: float = 1e-8, warmup_epochs: float = 10.0, end_lr_factor: float = 0.01,
                 weights: str | None = None):
        tasks = list(tasks)
        unknown = set(tasks) - {"detection", *TASK_IDS, "captioning"}
        if unknown or not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks {tasks}: name each of 'detection', 'instance_segmentation', 'keypoints', "
                             "'captioning' at most once")
        if "captioning" in tasks:
            if caption_max_len > max_seq_len:
                raise ValueError(f"caption_max_len {caption_max_len} is longer than max_seq_len {max_seq_len}")
            if text_vocab_shift < coord_vocab_shift + quantization_bins or text_vocab_shift >= vocab_size:
                raise ValueError(f"text_vocab_shift {text_vocab_shift} must be at least coord_vocab_shift + "
                                 f"quantization_bins ({coord_vocab_shift + quantization_bins}) and below vocab_size "
                                 f"{vocab_size}")
        if task_weights is not None and len(task_weights) != len(tasks):
            raise ValueError(f"task_weights has {len(task_weights)} weights for {len(tasks)} tasks")
        if "instance_segmentation" in tasks and 2 * max_points_per_object + 6 > max_seq_len:
            raise ValueError(f"max_seq_len {max_seq_len} cannot hold a prompt and {max_points_per_object} polygon "
                             f"points ({2 * max_points_per_object + 6} tokens)")
        if detected_prompts not in ("top", "first"):
            raise ValueError(f"detected_prompts must be 'top' or 'first', got {detected_prompts!r}")
        for name, value in (("instance_boxes", instance_boxes), ("keypoint_boxes", keypoint_boxes)):
            if value not in ("annotated", "detected"):
                raise ValueError(f"{name} must be 'annotated' or 'detected', got {value!r}")
            if value == "detected" and "detection" not in tasks:
                raise ValueError(f"{name}='detected' prompts with the model's own detections: add 'detection' to "
                                 "tasks")
        sigmas = list(keypoint_sigmas) if keypoint_sigmas is not None else list(COCO_SIGMAS)
        if "keypoints" in tasks and len(sigmas) != num_keypoints:
            raise ValueError(f"{len(sigmas)} keypoint_sigmas for {num_keypoints} keypoints: give one per keypoint")
        super().__init__(backbone, image_size, num_encoder_layers, dim_att, dim_mlp, num_heads, num_decoder_layers,
                         dim_att_dec, dim_mlp_dec, num_heads_dec, vocab_size, max_seq_len, drop_path, drop_units,
                         drop_att, feature_stage, patch_size, quantization_bins, coord_vocab_shift, max_instances,
                         max_instances_test, noise_bbox_weight, eos_token_weight, class_label_corruption,
                         sequence_augmentation, top_k, top_p, temperature, evaluate_ap, lr, weight_decay, beta1,
                         beta2, eps, warmup_epochs, end_lr_factor, weights=None)
        self.save_hyperparameters(ignore=["weights"])
        self.hparams.tasks = tasks
        self.hparams.keypoint_sigmas = sigmas
        self.task_ap: nn.ModuleDict | None = None
        self.register_buffer("caption_tokenizer", torch.zeros(0, dtype=torch.uint8))
        self._tokenizer: tuple[int, CaptionTokenizer] | None = None
        self.init_weights_from(weights)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "caption_tokenizer")
        if saved is not None and saved.shape != self.caption_tokenizer.shape:  # its size is the trained model's
            self.caption_tokenizer = torch.zeros_like(saved, device=self.caption_tokenizer.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def tokenizer(self) -> CaptionTokenizer:
        """The caption tokenizer the model keeps (trained when it first sets up with a captioning DataModule)."""
        if not len(self.caption_tokenizer):
            raise RuntimeError("this model has no caption tokenizer yet: it is trained on the training captions when "
                               "the model sets up with a captioning DataModule (trainer.fit), or comes with a "
                               "release; or call model.set_caption_tokenizer(bytes)")
        key = hash(self.caption_tokenizer.cpu().numpy().tobytes())
        if self._tokenizer is None or self._tokenizer[0] != key:
            self._tokenizer = (key, CaptionTokenizer(self.caption_tokenizer.cpu().numpy().tobytes()))
        return self._tokenizer[1]

    def set_caption_tokenizer(self, model: bytes) -> None:
        """Keep a serialised SentencePiece model as the caption tokenizer, after checking that the vocabulary has
        room for its pieces."""
        tokenizer = CaptionTokenizer(model)
        need = self.hparams.text_vocab_shift + len(tokenizer)
        if need > self.hparams.vocab_size:
            raise ValueError(f"the caption tokenizer has {len(tokenizer)} pieces: vocab_size must be at least "
                             f"text_vocab_shift + {len(tokenizer)} = {need} (it is {self.hparams.vocab_size})")
        self.caption_tokenizer = torch.frombuffer(bytearray(model), dtype=torch.uint8).to(self.caption_tokenizer.device)

    # ---------------------------------------------------------------- sequences and loss
    def instance_length(self, task: str) -> int:
        """Tokens of an instance sequence: the 6-token prompt and 2 per point."""
        hp = self.hparams
        return 2 * (hp.max_points_per_object if task == "instance_segmentation" else hp.num_keypoints) + 6

    def instance_sequences(self, task: str, targets: list[dict], train: bool
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input, target, weights) [B, M, L] and labels [B, M] of an instance task's batch (tasks.py)."""
        hp = self.hparams
        seg = task == "instance_segmentation"
        key = "polygon" if seg else "keypoints"
        self._check_labels([t["labels"] for t in targets])
        boxes, labels, points = (x.to(self.device) for x in pad_instances(
            targets, key, hp.max_instances_per_image_seg if seg else 1))
        prompt = instance_prompt(TASK_IDS[task], boxes, labels, hp.quantization_bins, hp.coord_vocab_shift)
        response = points_to_tokens(points, labels, hp.quantization_bins, hp.coord_vocab_shift)
        inp, target, w = instance_training_sequences(
            prompt, response, labels, self.instance_length(task),
            hp.seg_eos_token_weight if seg else hp.kpt_eos_token_weight,
            None if seg else hp.invisible_token_weight, mask_inputs=train and not seg)
        return inp, target, w, labels

    def caption_sequences(self, targets: list[dict], train: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input, target, weights) [B, captions_per_image, caption_max_len] of a captioning batch (captions.py)."""
        hp = self.hparams
        ids = [self.tokenizer.encode(t["captions"]) for t in targets]
        seqs = caption_training_sequences(ids, hp.captions_per_image, hp.caption_max_len, hp.text_vocab_shift,
                                          hp.caption_eos_token_weight, hp.input_seq_drop_rate if train else 0.0)
        return tuple(x.to(self.device) for x in seqs)

    def task_loss(self, task: str, images: torch.Tensor, targets: list[dict], train: bool) -> torch.Tensor:
        if task == "detection":
            return self.loss(images, targets, train)
        if task == "captioning":
            inp, target, w = self.caption_sequences(targets, train)
        else:
            inp, target, w, _ = self.instance_sequences(task, targets, train)
        memory = self.model.encode(images).repeat_interleave(inp.shape[1], 0)  # one per sequence of the image
        logits = self.model.decode(inp.flatten(0, 1), memory)
        return sequence_loss(logits, target.flatten(0, 1), w.flatten(0, 1))

    def _weights(self) -> list[float]:
        hp = self.hparams
        return list(hp.task_weights) if hp.task_weights is not None else [1.0] * len(hp.tasks)

    def training_step(self, batch, batch_idx):
        total = 0.0
        for task, weight in zip(self.hparams.tasks, self._weights()):
            images, targets = batch[task]
            loss = self.task_loss(task, images, targets, train=True)
            self.log(f"train/loss_{task}", loss.detach(), batch_size=len(images))
            total = total + weight * loss
        self.log("train/loss", total.detach(), prog_bar=True)
        return total

    # ---------------------------------------------------------------- evaluation
    def setup(self, stage: str) -> None:
        if "detection" in self.hparams.tasks:
            super().setup(stage)
        if "captioning" in self.hparams.tasks and not len(self.caption_tokenizer):
            dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            if dm is None or not hasattr(dm, "caption_texts"):
                raise RuntimeError("a captioning model without a caption tokenizer trains one on the DataModule's "
                                   "training captions: fit with a DataModule that has caption_texts() "
                                   "(zoo.data.COCODetectionDataModule with 'captioning' in its tasks)")
            self.set_caption_tokenizer(train_tokenizer(dm.caption_texts(), self.hparams.caption_vocab_size))
        if self.hparams.evaluate_ap and self.task_ap is None:
            from torchmetrics.detection import MeanAveragePrecision

            from zoo.metrics import KeypointAP

            made = {}
            for s in ("val", "test"):
                if "instance_segmentation" in self.hparams.tasks:
                    made[f"{s}_segm"] = MeanAveragePrecision(iou_type="segm", backend="pycocotools")
                if "keypoints" in self.hparams.tasks:
                    made[f"{s}_kpt"] = KeypointAP(self.hparams.keypoint_sigmas)
                if "captioning" in self.hparams.tasks:
                    from torchmetrics.text import BLEUScore

                    made[f"{s}_cap"] = BLEUScore(n_gram=4)
            self.task_ap = nn.ModuleDict(made)

    def evaluate_task(self, batch, stage: str, dataloader_idx: int) -> None:
        task = self.hparams.tasks[dataloader_idx]
        if task == "detection":
            return self.evaluate(batch, stage)
        images, targets = batch
        whole = task == "keypoints" and self._whole_images(targets)
        if not whole:  # the teacher-forced loss needs the annotated crops
            self.log(f"{stage}/loss_{task}", self.task_loss(task, images, targets, train=False), sync_dist=True,
                     batch_size=len(images), add_dataloader_idx=False)
        if self.task_ap is None:
            return
        if task == "captioning":
            self.task_ap[f"{stage}_cap"].update([caption_words(c) for c in self.caption(images)],
                                                [[caption_words(c) for c in t["captions"]] for t in targets])
        elif task == "instance_segmentation":
            self.task_ap[f"{stage}_segm"].update(self.segment(images, targets), self._mask_truth(targets))
        elif whole:
            found = self.keypoints_on_detections(images, targets)
            self.task_ap[f"{stage}_kpt"].update([f["keypoints"] for f in found], [f["scores"] for f in found], targets,
                                                self.hparams.image_size, whole_images=True)
        else:
            points, scores = self.keypoints(images, targets)
            self.task_ap[f"{stage}_kpt"].update(points, scores, targets, self.hparams.image_size)

    def _mask_truth(self, targets: list[dict]) -> list[dict[str, torch.Tensor]]:
        """The annotated objects of instance-segmentation targets as the mask AP's ground truth: masks drawn from
        the polygons as read, in the original image's pixels (crowds left out)."""
        truth = []
        for t in targets:
            h, w = t["orig_size"].tolist()
            gt = [rasterise(polygons_from_points(q.flatten()), h, w)
                  for q in points_to_pixels(t["polygon"], t, self.hparams.image_size)]
            keep = ~t["iscrowd"]
            masks = torch.stack(gt) if gt else torch.zeros(0, h, w, dtype=torch.bool)  # an image without objects
            truth.append({"masks": masks[keep], "labels": t["labels"][keep],
                          "iscrowd": t["iscrowd"][keep].long(), "area": t["area"][keep]})
        return truth

    def _whole_images(self, targets: list[dict]) -> bool:
        """Whether keypoint targets are whole images (keypoint_boxes="detected") or annotated crops ("annotated");
        an error where the data gives the other kind."""
        whole = "crop_offset" not in targets[0]
        if whole != (self.hparams.keypoint_boxes == "detected"):
            raise ValueError(
                f"keypoint_boxes={self.hparams.keypoint_boxes!r} needs keypoint evaluation data of "
                + ("whole images: set the DataModule's keypoint_eval_images to true" if not whole else
                   "annotated crops: set the DataModule's keypoint_eval_images to false (or the model's "
                   "keypoint_boxes to 'detected')"))
        return whole

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self.evaluate_task(batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self.evaluate_task(batch, "test", dataloader_idx)

    def log_ap(self, stage: str) -> None:
        if "detection" in self.hparams.tasks:
            super().log_ap(stage)
        if self.task_ap is None:
            return
        for kind, prefix in (("segm", "segm_"), ("kpt", "kpt_")):
            if f"{stage}_{kind}" in self.task_ap:
                result = self.task_ap[f"{stage}_{kind}"].compute()
                self.log_dict({f"{stage}/{prefix}{k}": torch.as_tensor(result[k]).float()
                               for k in ("map", "map_50", "map_75")}, add_dataloader_idx=False)
                self.task_ap[f"{stage}_{kind}"].reset()
        if f"{stage}_cap" in self.task_ap:
            self.log(f"{stage}/bleu4", self.task_ap[f"{stage}_cap"].compute().float(), add_dataloader_idx=False)
            self.task_ap[f"{stage}_cap"].reset()

    # ---------------------------------------------------------------- inference
    def _prompted(self, task: str, images: torch.Tensor, targets: list[dict], samples: int, top_p: float,
                  generator: torch.Generator | None = None, detected: bool = False):
        """Sampled responses to the instance prompts: (tokens [B, M, S, 2P], logits [B, M, S, 2P, V], labels [B, M],
        boxes [B, M, 4], scores [B, M]); the prompts are the annotated boxes (score 1) or, with `detected`, the
        model's own M detections."""
        hp = self.hparams
        m = hp.max_instances_per_image_seg if task == "instance_segmentation" else 1
        key = "polygon" if task == "instance_segmentation" else "keypoints"
        memory = self.model.encode(images)
        if detected and hp.detected_prompts == "top":
            boxes, labels, scores = top_detections(*self.detect(images, generator, hp.max_instances_test, memory), m)
        elif detected:
            boxes, labels, scores = self.detect(images, generator, m, memory)
        else:
            boxes, labels, _ = (x.to(images.device) for x in pad_instances(targets, key, m))
            scores = (labels > 0).float()
        prompt = instance_prompt(TASK_IDS[task], boxes, labels, hp.quantization_bins, hp.coord_vocab_shift)
        prompt = prompt.repeat_interleave(samples, 1).flatten(0, 1)
        tokens, logits = self.model.generate(images, prompt, self.instance_length(task), hp.temperature, hp.top_k,
                                             top_p, generator, memory=memory.repeat_interleave(m * samples, 0))
        shape = (len(images), m, samples)
        return tokens.view(*shape, -1), logits.view(*shape, *logits.shape[1:]), labels, boxes, scores

    @torch.no_grad()
    def segment(self, images: torch.Tensor, targets: list[dict], generator: torch.Generator | None = None,
                boxes: str | None = None) -> list[dict[str, torch.Tensor]]:
        """Per image, its prompted objects (`boxes`: "annotated" or "detected"; None: `instance_boxes`): `masks`
        [n, H, W] (original pixels), each the ensemble of `ensemble_num_samples` sampled polygons where at least
        (`ensemble_inclusive`; else more than) `ensemble_threshold` of them cover a pixel, with their `labels` and
        `scores`."""
        hp = self.hparams
        detected = (boxes or hp.instance_boxes) == "detected"
        tokens, _, labels, _, scores = self._prompted("instance_segmentation", images, targets,
                                                      hp.ensemble_num_samples, hp.seg_top_p, generator, detected)
        points = tokens_to_points(tokens, hp.quantization_bins, hp.coord_vocab_shift)
        out = []
        for i, t in enumerate(targets):
            h, w = t["orig_size"].tolist()
            pixels = points_to_pixels(points[i], t, hp.image_size).cpu()  # [M, S, P, 2] (x, y)
            kept = (labels[i] > 0).nonzero()[:, 0].tolist()
            keep = torch.ge if hp.ensemble_inclusive else torch.gt
            masks = [keep(torch.stack([rasterise(polygons_from_points(s), h, w) for s in pixels[j]]).float().mean(0),
                          hp.ensemble_threshold) for j in kept]
            out.append({"masks": torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.bool),
                        "labels": labels[i, kept].cpu(), "scores": scores[i, kept].float().cpu()})
        return out

    @torch.no_grad()
    def keypoints(self, images: torch.Tensor, targets: list[dict], generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints [B, K, 2] (normalised y, x in the input) of each example's annotated object and their scores
        [B], read as the official keypoint task reads them (invisible tokens redrawn without the invisible token,
        points still invisible at the box centre, score the mean probability of the sampled tokens)."""
        tokens, logits, _, boxes, _ = self._prompted("keypoints", images, targets, 1, self.hparams.kpt_top_p,
                                                     generator)
        return self._read_keypoints(tokens[:, 0, 0], logits[:, 0, 0], boxes[:, 0], generator)

    def _read_keypoints(self, tokens: torch.Tensor, logits: torch.Tensor, boxes: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled keypoint responses (tokens [N, L], logits [N, L, V]) to prompts with boxes [N, 4] -> points
        [N, K, 2] (normalised y, x) and scores [N] (official `postprocess_tpu`, points_score_weight 1)."""
        hp = self.hparams
        logits = logits.float().clone()
        logits[..., INVISIBLE_TOKEN] -= 1e9
        redraw = top_p_logits(logits / hp.temperature, hp.kpt_top_p, hp.top_k).softmax(-1)
        redrawn = torch.multinomial(redraw.flatten(0, 1).cpu(), 1, generator=generator).view_as(tokens)
        tokens = torch.where(tokens == INVISIBLE_TOKEN, redrawn.to(tokens.device), tokens)
        probs = logits.softmax(-1).gather(-1, tokens[..., None])[..., 0]
        real = (tokens != PADDING_TOKEN).float()
        scores = (probs * real).sum(-1) / real.sum(-1).clamp(min=1)
        points = tokens_to_points(tokens, hp.quantization_bins, hp.coord_vocab_shift)[:, :2 * hp.num_keypoints]
        centre = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], -1)
        yx = points.view(len(points), -1, 2)
        yx = torch.where(yx == INVISIBLE_FLOAT, centre[:, None].expand_as(yx), yx)
        return yx, scores

    @torch.no_grad()
    def keypoints_on_detections(self, images: torch.Tensor, targets: list[dict],
                                generator: torch.Generator | None = None) -> list[dict[str, torch.Tensor]]:
        """Keypoints of the model's own detections of `keypoint_category` in whole images (the official evaluation
        on detected boxes; see the module docstring). Per image: `keypoints` [n, K, 2] (x, y pixels of the original
        image), `scores` [n] (mean probability of the sampled tokens), `boxes` [n, 4] (xmin, ymin, xmax, ymax
        pixels) and `labels` [n] of its n kept detections."""
        from zoo.data.coco import boxes_to_pixels, crop_to_box, eval_transform

        hp, size = self.hparams, self.hparams.image_size
        boxes, labels, _ = self.detect(images, generator)
        keep = labels > 0 if hp.keypoint_category is None else labels == hp.keypoint_category
        crops, frames, prompts, owner = [], [], [], []
        for i, j in keep.nonzero().tolist():
            t = targets[i]
            h, w = t["unpadded_size"].tolist()
            box = (boxes[i, j].float().cpu() * size / t["unpadded_size"].float().repeat(2)).clamp(0, 1)
            if box[2] < box[0] or box[3] < box[1]:  # an inverted box crops nothing (the official `is_image_valid`)
                keep[i, j] = False
                continue
            crop, frame = crop_to_box(images[i, :, :h, :w].cpu(), {"boxes": box[None]}, hp.crop_pad_scale)
            crop, frame = eval_transform(crop, {**frame, "orig_size": torch.tensor(crop.shape[-2:])}, size)
            crops.append(crop)
            frames.append(frame)
            prompts.append(frame["boxes"][0])
            owner.append(i)
        out = [{"keypoints": torch.zeros(0, hp.num_keypoints, 2), "scores": torch.zeros(0),
                "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)} for _ in targets]
        if not crops:
            return out
        crops = torch.stack(crops).to(images)
        prompt_boxes = torch.stack(prompts).to(images.device)
        prompt = instance_prompt(KEYPOINT_TASK, prompt_boxes, labels[keep], hp.quantization_bins, hp.coord_vocab_shift)
        tokens, logits = self.model.generate(crops, prompt, self.instance_length("keypoints"), hp.temperature,
                                             hp.top_k, hp.kpt_top_p, generator)
        yx, scores = self._read_keypoints(tokens, logits, prompt_boxes, generator)
        owner = torch.tensor(owner)
        for i, t in enumerate(targets):
            mine = (owner == i).nonzero()[:, 0].tolist()
            if not mine:
                continue
            to_original = (t["orig_size"].float() / t["unpadded_size"].float()).flip(0)  # (x, y) scale
            points = torch.stack([points_to_pixels(yx[k].flatten().cpu(), frames[k], size) for k in mine])
            out[i] = {"keypoints": points * to_original, "scores": scores[mine].cpu(),
                      "boxes": boxes_to_pixels(boxes[i][keep[i]].cpu(), t, size), "labels": labels[i][keep[i]].cpu()}
        return out

    @torch.no_grad()
    def caption(self, images: torch.Tensor, generator: torch.Generator | None = None) -> list[str]:
        """A caption per image, sampled with top-p `caption_top_p` after the captioning prompt."""
        hp = self.hparams
        prompt = torch.full((len(images), 1), CAPTIONING_TASK, dtype=torch.long, device=images.device)
        tokens, _ = self.model.generate(images, prompt, hp.caption_max_len + 1, hp.temperature, hp.top_k,
                                        hp.caption_top_p, generator)
        tokenizer = self.tokenizer
        return tokenizer.decode(tokens_to_pieces(tokens.cpu(), hp.text_vocab_shift, len(tokenizer)))

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        task = self.hparams.tasks[dataloader_idx]
        if task == "detection":
            return super().predict_step(batch, batch_idx)
        images, targets = batch
        if task == "captioning":
            return [{"image_id": t["image_id"], "caption": c} for t, c in zip(targets, self.caption(images))]
        if task == "instance_segmentation":
            return [{"image_id": t["image_id"], **p} for t, p in zip(targets, self.segment(images, targets))]
        if self._whole_images(targets):
            return [{"image_id": t["image_id"], **f} for t, f in zip(targets, self.keypoints_on_detections(images,
                                                                                                         targets))]
        yx, scores = self.keypoints(images, targets)
        return [{"image_id": t["image_id"], "keypoints": points_to_pixels(p.flatten(), t, self.hparams.image_size),
                 "score": s} for p, s, t in zip(yx, scores, targets)]

    def analyse(self, folder, datamodule=None) -> dict:
        """Evaluations beside the recipe's test, on its test split. With captioning: the test captions sampled again
        and scored by BLEU-4 against the references of the next test image instead of their own
        (`test/bleu4_mismatched`): the share of BLEU a caption earns from the wording the scenes share rather than
        from its own image. With detection and an instance task evaluated on annotated boxes: the same task prompted
        with the model's own detections (`test/segm_detected_*`, `test/kpt_detected_*`: the official README's
        evaluation, where detection errors count)."""
        tasks = getattr(datamodule, "tasks", None) or ()
        hp, metrics = self.hparams, {}
        self.eval()
        if "captioning" in hp.tasks and "captioning" in tasks:
            from torchmetrics.text import BLEUScore

            datamodule.setup("test")
            loader = datamodule.test_dataloader()[tasks.index("captioning")]
            g = torch.Generator().manual_seed(0)
            sampled, references = [], []
            for images, targets in loader:
                sampled += [caption_words(c) for c in self.caption(images.to(self.device), g)]
                references += [[caption_words(c) for c in t["captions"]] for t in targets]
            rolled = references[1:] + references[:1]
            metrics["test/bleu4_mismatched"] = float(BLEUScore(n_gram=4)(sampled, rolled))
        if "detection" in hp.tasks and hp.evaluate_ap:
            metrics.update(self._on_detected_boxes(datamodule, tasks))
        return {"metrics": metrics} if metrics else {}

    def _on_detected_boxes(self, datamodule, tasks) -> dict[str, float]:
        """Instance segmentation and keypoints of the test split prompted with the model's detections, where the
        recipe prompts them with the annotated boxes (see `analyse`)."""
        from torchmetrics.detection import MeanAveragePrecision

        from zoo.metrics import KeypointAP

        hp, out = self.hparams, {}
        g = torch.Generator().manual_seed(0)
        if {"instance_segmentation"} <= set(hp.tasks) & set(tasks) and hp.instance_boxes == "annotated":
            datamodule.setup("test")
            metric = MeanAveragePrecision(iou_type="segm", backend="pycocotools")
            for images, targets in datamodule.test_dataloader()[tasks.index("instance_segmentation")]:
                metric.update(self.segment(images.to(self.device), targets, g, "detected"), self._mask_truth(targets))
            result = metric.compute()
            out.update({f"test/segm_detected_{k}": float(result[k]) for k in ("map", "map_50", "map_75")})
        if {"keypoints"} <= set(hp.tasks) & set(tasks) and hp.keypoint_boxes == "annotated":
            whole = datamodule.whole_keypoint_images()
            whole.setup("test")
            metric = KeypointAP(hp.keypoint_sigmas)
            for images, targets in whole.test_dataloader()[tasks.index("keypoints")]:
                found = self.keypoints_on_detections(images.to(self.device), targets, g)
                metric.update([f["keypoints"] for f in found], [f["scores"] for f in found], targets, hp.image_size,
                              whole_images=True)
            result = metric.compute()
            out.update({f"test/kpt_detected_{k}": float(result[k]) for k in ("map", "map_50", "map_75")})
        return out

    def release_figures(self, folder, datamodule=None, images: int = 8, min_score: float = 0.3) -> dict:
        """detections.png: the first `images` test images with their sampled detections (as `Pix2SeqDetector`);
        instances.png: the first test images of the instance-segmentation task with their predicted masks (tinted);
        keypoints.png: the first keypoint examples with the sampled points (filled) and the annotated ones (hollow);
        captions.png: the first captioning test images with a sampled caption and the first reference."""
        if datamodule is None or not getattr(datamodule, "tasks", None):
            return {}
        from pathlib import Path

        from zoo._plots import _pyplot, _save

        datamodule.setup("test")
        loaders = dict(zip(datamodule.tasks, datamodule.test_dataloader()))
        plt, out, size = _pyplot(), {}, self.hparams.image_size
        if "detection" in loaders and "detection" in self.hparams.tasks:
            out.update(self.detection_figure(folder, next(iter(loaders["detection"])),
                                             getattr(datamodule, "categories", {}) or {}, images, min_score))
        g = torch.Generator().manual_seed(0)
        self.eval()
        for task in ("instance_segmentation", "keypoints", "captioning"):
            if task not in loaders or task not in self.hparams.tasks:
                continue
            batch_images, targets = next(iter(loaders[task]))
            batch_images, targets = batch_images[:images].to(self.device), targets[:images]
            cols = min(4, len(batch_images))
            rows = -(-len(batch_images) // cols)
            fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, (4.4 if task == "captioning" else 3) * rows),
                                     squeeze=False)
            if task == "captioning":
                import textwrap

                for ax, im, t, c in zip(axes.flat, batch_images.cpu(), targets, self.caption(batch_images, g)):
                    h, w = t["unpadded_size"].tolist()
                    ax.imshow(im[:, :h, :w].permute(1, 2, 0).numpy())
                    text = textwrap.fill("model: " + c, 38) + "\n" + textwrap.fill("data: " + t["captions"][0], 38)
                    ax.set_title(text, fontsize=7, loc="left")
                title = "Test images: a sampled caption (model) and the first reference caption (data)"
            elif task == "instance_segmentation":
                masks = [p["masks"] for p in self.segment(batch_images, targets, g)]
                for ax, t, m in zip(axes.flat, targets, masks):
                    record = next(r for r in loaders[task].dataset.records if r["id"] == int(t["image_id"]))
                    im = load_image(record["path"]).permute(1, 2, 0)  # the original image, where the masks are
                    colours = torch.rand(len(m), 3, generator=g)
                    for mask, c in zip(m, colours):
                        im = torch.where(mask[..., None], 0.5 * im + 0.5 * c, im)
                    ax.imshow(im.numpy())
                title = "Test images: masks from 8 polygon samples per annotated box"
            else:
                if self._whole_images(targets):  # points of the model's detections, in the input's pixels
                    found = self.keypoints_on_detections(batch_images, targets, g)
                    sampled = [(f["keypoints"] * (t["unpadded_size"] / t["orig_size"]).flip(0)).view(-1, 2)
                               for t, f in zip(targets, found)]
                    title = "Test images: keypoints of the model's own detections (filled), annotated ones (hollow)"
                else:  # points of each annotated object's crop
                    sampled = list((self.keypoints(batch_images, targets, g)[0].cpu() * size).flip(-1))
                    title = "Test objects: sampled keypoints (filled) and annotated ones (hollow)"
                for ax, im, t, p in zip(axes.flat, batch_images.cpu(), targets, sampled):
                    ax.imshow(im.permute(1, 2, 0).numpy())
                    truth = t["keypoints"].reshape(-1, 2)
                    seen = truth[:, 0] >= 0
                    ax.scatter(truth[seen, 1] * size, truth[seen, 0] * size, s=30, facecolors="none", ec="white")
                    ax.scatter(p[:, 0], p[:, 1], s=12, c=[k % self.hparams.num_keypoints for k in range(len(p))],
                               cmap="autumn")
            for ax in axes.flat:
                ax.axis("off")
            name = {"instance_segmentation": "instances.png", "keypoints": "keypoints.png"}.get(task, "captions.png")
            path = _save(fig, Path(folder) / name, title)
            out[path.name] = path
        return out

