"""Pix2seq's detection vocabulary and sequences (arXiv 2109.10852 §2.1-2.3; google-research/pix2seq `vocab.py`,
`tasks/object_detection.py`, `data/data_utils.py`, `models/model_utils.py`, `architectures/transformers.py`).

Vocabulary (official ids): 0 is padding and end of sequence; 10 is the detection task prompt; 30 the FAKE class of
noise objects; class c (a COCO category id, 1-90) is token 100 + c; a coordinate quantised to bin q (of `bins`,
q = round(v (bins - 1)), v in [0, 1]) is token `coord_shift` + q. The released configs use bins 1000, coordinate
shift 1000 and a 3000-token vocabulary; the paper's from-scratch models 2000 bins at 1333 px.

An object is five tokens [ymin, xmin, ymax, xmax, class] (y before x). A training sequence is the prompt, the real
objects in random order (at most `max_instances`), then noise objects up to `max_instances` (§2.3): jittered
duplicates of real boxes and bad boxes (real boxes moved to a random centre, or random boxes), all labelled FAKE.
Targets are 0-padded to `max_seq_len`. Token weights: real objects 1; a noise object's coordinates 0 and its FAKE
class `noise_bbox_weight` (1.0); padding/end tokens `eos_token_weight` (0.1). The input sequence (teacher forcing)
has every class token corrupted (`rand_n_fake_cls`: a random class token or FAKE, half and half).
The loss is sum(w CE) / sum(w).

Inference samples with nucleus (top-p) filtering as the official `top_logits` does it: keep the largest set of
most likely tokens whose cumulative probability is at most p, and always the most likely one (p = 0.4). Decoding
reads objects at every fifth token: the class is the most probable class token at the class position (FAKE
excluded) and its score that token's probability under the full softmax; coordinates are dequantised from the
sampled tokens and clipped to [0, 1].
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

PADDING_TOKEN = 0
DETECTION_TASK = 10
FAKE_CLASS_TOKEN = 30
BASE_VOCAB_SHIFT = 100
#: the label of a noise object, as the official pipeline stores it (its class token is then FAKE_CLASS_TOKEN)
NOISE_LABEL = FAKE_CLASS_TOKEN - BASE_VOCAB_SHIFT
Corruption = Literal["none", "rand_cls", "real_n_fake_cls", "rand_n_fake_cls", "real_n_rand_n_fake_cls"]


def quantize(coords: torch.Tensor, bins: int) -> torch.Tensor:
    """Normalised coordinates in [0, 1] -> bins round(v (bins - 1)), clipped to [0, bins - 1]."""
    return (coords * (bins - 1)).round().long().clamp(0, bins - 1)


def dequantize(q: torch.Tensor, bins: int) -> torch.Tensor:
    return q.float() / (bins - 1)


def _rand(shape, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator).to(device)


def _first_valid(valid: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Per row, a uniformly random ordering of the columns with every valid column before every invalid one."""
    return (_rand(valid.shape, generator, valid.device) + (~valid) * 2.0).argsort(-1)


def pad_objects(boxes: list[torch.Tensor], labels: list[torch.Tensor], max_instances: int,
                generator: torch.Generator | None = None, shuffle: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image objects -> (boxes [B, M, 4], labels [B, M] with 0 in empty slots, counts [B]), each image's
    objects in a random order (official `reorder_object_instances`, order "random") and then truncated to M."""
    n = torch.tensor([len(lb) for lb in labels])
    width = max(int(n.max()) if len(n) else 0, max_instances)
    device = boxes[0].device if boxes else None
    b = torch.zeros(len(labels), width, 4, device=device)
    lab = torch.zeros(len(labels), width, dtype=torch.long, device=device)
    valid = torch.arange(width)[None] < n[:, None]
    b[valid.to(b.device)] = torch.cat(boxes).float() if boxes else b[:0, 0]
    lab[valid.to(b.device)] = torch.cat(labels).long() if labels else lab[:0, 0]
    if shuffle:
        order = _first_valid(valid, generator).to(b.device)
        b, lab = b.gather(1, order[..., None].expand(-1, -1, 4)), lab.gather(1, order)
    return b[:, :max_instances], lab[:, :max_instances], n.clamp(max=max_instances).to(b.device)


def _truncated_normal(shape, std: float, generator, device) -> torch.Tensor:
    """N(0, std²) truncated at ±2 std (tf.random.truncated_normal)."""
    out = torch.empty(shape)
    torch.nn.init.trunc_normal_(out, 0.0, std, -2 * std, 2 * std, generator=generator)
    return out.to(device)


def _boxes_at(cy: torch.Tensor, cx: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.stack([cy - h.abs() / 2, cx - w.abs() / 2, cy + h.abs() / 2, cx + w.abs() / 2], -1).clamp(0, 1)


def add_noise_objects(boxes: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill each image's slots after its `counts` real objects with noise objects (official `augment_bbox` with
    max_jitter 0 and mix_rate 0), labelled NOISE_LABEL.

    Of an image's k = M - n noise objects, d ~ U{0..k} are duplicates (none without real objects): real boxes
    (drawn without replacement from the real boxes tiled floor(k/n) + 1 times) each coordinate moved by
    (box height or width) x N(0, 0.05²) truncated at ±0.1. The other k - d are bad boxes, drawn from a pool of
    k - d shifted real boxes (same size, centre ~ U[0, 1]²) and k - d random boxes (centre ~ U[0, 1]², height and
    width |N(0, 0.5²)| truncated at 1). Bad and duplicate boxes are shuffled together; all boxes are clipped to [0, 1].
    """
    bsz, m = labels.shape
    dev = boxes.device
    slots = torch.arange(m, device=dev)[None]
    n = counts[:, None]
    k = m - n
    dup = torch.where(n > 0, (_rand((bsz, 1), generator, dev) * (k + 1)).floor().long().clamp(max=k), 0)
    bad = k - dup
    tiled = n * (k // n.clamp(min=1) + 1)  # rows of the real boxes tiled floor(k/n) + 1 times (<= M)

    def draw_real(g):  # real boxes in the order of a shuffled tiling
        src = _first_valid(slots < tiled, g).remainder(n.clamp(min=1))
        return boxes.gather(1, src[..., None].expand(-1, -1, 4))

    real = draw_real(generator)
    size = real[..., 2:] - real[..., :2]
    cy, cx = _rand((bsz, m), generator, dev), _rand((bsz, m), generator, dev)
    shifted = _boxes_at(cy, cx, size[..., 0], size[..., 1])
    cy, cx = _rand((bsz, m), generator, dev), _rand((bsz, m), generator, dev)
    random = _boxes_at(cy, cx, _truncated_normal((bsz, m), 0.5, generator, dev),
                       _truncated_normal((bsz, m), 0.5, generator, dev))
    pool = torch.cat([shifted, random], 1)
    in_pool = torch.cat([(slots < bad) & (n > 0), slots < bad], 1)
    bad_boxes = pool.gather(1, _first_valid(in_pool, generator)[:, :m, None].expand(-1, -1, 4))

    real = draw_real(generator)
    hw = (real[..., 2:] - real[..., :2]).repeat(1, 1, 2)
    dup_boxes = (real + hw * _truncated_normal((bsz, m, 4), 0.05, generator, dev)).clamp(0, 1)

    noise = torch.cat([bad_boxes, dup_boxes], 1)
    order = _first_valid(torch.cat([slots < bad, slots < dup], 1), generator)[:, :m]
    noise = noise.gather(1, order[..., None].expand(-1, -1, 4))
    is_noise = slots >= n
    at = (slots - n).clamp(min=0)
    out = torch.where(is_noise[..., None], noise.gather(1, at[..., None].expand(-1, -1, 4)), boxes)
    return out, torch.where(is_noise, NOISE_LABEL, labels)


def build_sequences(boxes: torch.Tensor, labels: torch.Tensor, bins: int = 1000, coord_shift: int = 1000,
                    max_seq_len: int = 512, noise_bbox_weight: float = 1.0, eos_token_weight: float = 0.1,
                    corruption: Corruption = "rand_n_fake_cls", task_token: int = DETECTION_TASK,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input [B, L], target [B, L], token weights [B, L]) for boxes [B, M, 4] (normalised yxyx) and labels [B, M]
    (category ids, NOISE_LABEL for noise objects, 0 for empty slots); L = max_seq_len. The input is the prompt and
    the class-corrupted objects, the target the objects shifted by one (next-token prediction)."""
    bsz, m = labels.shape
    if 5 * m > max_seq_len:
        raise ValueError(f"{m} objects need {5 * m} tokens but max_seq_len is {max_seq_len}")
    dev = labels.device
    empty = labels == 0
    coords = torch.where(empty[..., None], PADDING_TOKEN, quantize(boxes, bins) + coord_shift)
    cls = torch.where(empty, PADDING_TOKEN, labels + BASE_VOCAB_SHIFT)
    target = torch.cat([coords, cls[..., None]], -1).flatten(1)

    def coin():
        return _rand((bsz, m), generator, dev) > 0.5

    rand_cls = BASE_VOCAB_SHIFT + (_rand((bsz, m), generator, dev) * (coord_shift - BASE_VOCAB_SHIFT)).long()
    fake = torch.full_like(cls, FAKE_CLASS_TOKEN)
    corrupted = {"none": lambda: cls, "rand_cls": lambda: rand_cls,
                 "real_n_fake_cls": lambda: torch.where(coin(), cls, fake),
                 "rand_n_fake_cls": lambda: torch.where(coin(), rand_cls, fake),
                 "real_n_rand_n_fake_cls": lambda: torch.where(coin(), cls, torch.where(coin(), rand_cls, fake))
                 }[corruption]()
    corrupted = torch.where(empty, PADDING_TOKEN, corrupted)
    inputs = torch.cat([coords, corrupted[..., None]], -1).flatten(1)

    real = (cls != FAKE_CLASS_TOKEN).float()
    weights = torch.cat([real[..., None].expand(-1, -1, 4), (real + (1 - real) * noise_bbox_weight)[..., None]], -1)
    prompt = torch.full((bsz, 1), task_token, dtype=torch.long, device=dev)
    inputs = F.pad(torch.cat([prompt, inputs], 1), (0, max_seq_len - 5 * m), value=PADDING_TOKEN)[:, :-1]
    target = F.pad(target, (0, max_seq_len - 5 * m), value=PADDING_TOKEN)
    weights = F.pad(weights.flatten(1), (0, max_seq_len - 5 * m))
    weights = torch.where(target == PADDING_TOKEN, eos_token_weight, weights)
    return inputs, target, weights


def sequence_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w CE) / sum(w) over all tokens of the batch (the official `compute_loss`)."""
    ce = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), reduction="none").view_as(weights)
    return (ce * weights).sum() / (weights.sum() + 1e-9)


def top_p_logits(logits: torch.Tensor, p: float, top_k: int = 0, mask: float = -1e10) -> torch.Tensor:
    """Official `top_logits`: with top_k > 0 keep the k largest logits; with p < 1 keep the largest logits whose
    cumulative softmax probability is at most p, and at least the largest; the rest become `mask`."""
    if top_k > 0:
        logits = torch.where(logits < logits.topk(top_k, -1).values[..., -1:], mask, logits)
    if p < 1:
        ordered = logits.sort(-1, descending=True).values
        cum = ordered.softmax(-1).cumsum(-1)
        lowest = torch.where(cum <= p, ordered, ordered.new_tensor(-mask)).min(-1, keepdim=True).values
        lowest = torch.minimum(lowest, ordered[..., :1])
        logits = torch.where(logits < lowest, mask, logits)
    return logits


def sample_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of logits [B, V]: temperature, then top-k / nucleus filtering, then a categorical draw."""
    probs = top_p_logits(logits.float() / temperature, top_p, top_k).softmax(-1)
    return torch.multinomial(probs.cpu() if generator is not None else probs, 1, generator=generator
                             ).to(logits.device)[:, 0]


def decode_objects(logits: torch.Tensor, seq: torch.Tensor, bins: int = 1000, coord_shift: int = 1000
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generated tokens seq [B, T] (prompt excluded) and their logits [B, T, V] -> (boxes [B, T//5, 4] normalised
    yxyx, classes [B, T//5] category ids, scores [B, T//5]) as the official `decode_object_seq_to_bbox` reads them."""
    t = seq.shape[1] - seq.shape[1] % 5
    seq, logits = seq[:, :t], logits[:, :t]
    probs = logits[:, 4::5].float().softmax(-1)
    class_probs = probs[..., BASE_VOCAB_SHIFT:coord_shift]
    scores, cls = class_probs.max(-1)
    q = (seq - coord_shift).view(seq.shape[0], -1, 5)[..., :4]
    return dequantize(q, bins).clamp(0, 1), cls, scores
