"""Pix2seq v2's instance tasks (Chen et al., "A Unified Sequence Interface for Vision Tasks", NeurIPS 2022;
google-research/pix2seq `tasks/task_utils.py`, `tasks/instance_segmentation.py`, `tasks/keypoint_detection.py`,
`vocab.py`, `configs/config_multi_task.py`): the sequences of instance segmentation and keypoint detection, whose
prompt names one object.

Vocabulary beyond detection's (tokenizer.py): task prompts 11 (instance segmentation), 12 (keypoints) and 13
(captioning); 40 separates the polygons of one object; 41 marks an invisible keypoint. Points are float
coordinates in [0, 1] with three reserved values, as the official data carries them: -1 padding (token 0), -2 a
separator (token 40), -3 invisible (token 41); any other value is quantised like a box coordinate.

An instance sequence is the prompt [task, ymin, xmin, ymax, xmax, class] (the object's box and class as detection
tokens) followed by the response: the object's points as (y, x) token pairs, polygons (at most 128 points, several
polygons separated by 40) or the 17 COCO keypoints (41 for an invisible one, both coordinates). Objects whose label
is 0 (padding) are all zeros. Training pads prompt + response to max_seq_len + 1 and shifts it into input and
target; token weights are 0 on the prompt's targets and 1 on the response's, keypoints' invisible targets get
`invisible_token_weight` (0.1), and padding targets `eos_token_weight` (instance segmentation 1.0, keypoints 0.0 in
the released multi-task config). Keypoint training also hides inputs: with a ratio drawn uniformly per batch, each
response input token is replaced by the invisible token with that probability (the prompt never).
"""
from __future__ import annotations

import torch

from zoo.data.coco import INVISIBLE_FLOAT, PADDING_FLOAT, SEPARATOR_FLOAT
from zoo.models.pix2seq.tokenizer import BASE_VOCAB_SHIFT, PADDING_TOKEN, dequantize, quantize

INSTANCE_SEGMENTATION_TASK = 11
KEYPOINT_TASK = 12
CAPTIONING_TASK = 13
SEPARATOR_TOKEN = 40
INVISIBLE_TOKEN = 41
_RESERVED = ((PADDING_FLOAT, PADDING_TOKEN), (SEPARATOR_FLOAT, SEPARATOR_TOKEN), (INVISIBLE_FLOAT, INVISIBLE_TOKEN))


def instance_prompt(task: int, boxes: torch.Tensor, labels: torch.Tensor, bins: int, coord_shift: int
                    ) -> torch.Tensor:
    """[task, ymin, xmin, ymax, xmax, class] per object: boxes [..., N, 4] (yxyx in [0, 1]), labels [..., N]
    (0: padding, whose prompt is all zeros) -> [..., N, 6] tokens."""
    coords = quantize(boxes, bins) + coord_shift
    seq = torch.cat([torch.full_like(labels[..., None], task), coords, labels[..., None] + BASE_VOCAB_SHIFT], -1)
    return torch.where(labels[..., None] > 0, seq, torch.zeros_like(seq))


def points_to_tokens(points: torch.Tensor, labels: torch.Tensor, bins: int, coord_shift: int) -> torch.Tensor:
    """Response tokens of points [..., N, K] (y, x interleaved; the reserved floats become their tokens); objects
    with label 0 are all zeros."""
    seq = quantize(points, bins) + coord_shift
    for value, token in _RESERVED:
        seq = torch.where(points == value, torch.full_like(seq, token), seq)
    return torch.where(labels[..., None] > 0, seq, torch.zeros_like(seq))


def tokens_to_points(seq: torch.Tensor, bins: int, coord_shift: int) -> torch.Tensor:
    """The inverse of `points_to_tokens` up to quantisation: coordinates in [0, 1], reserved tokens back to their
    floats (so a decoded polygon keeps its separators and a skeleton its invisible joints)."""
    points = dequantize(seq - coord_shift, bins)
    for value, token in _RESERVED:
        points = torch.where(seq == token, torch.full_like(points, value), points)
    return points


def instance_training_sequences(prompt: torch.Tensor, response: torch.Tensor, labels: torch.Tensor,
                                max_seq_len: int, eos_token_weight: float, invisible_token_weight: float | None = None,
                                mask_inputs: bool = False, generator: torch.Generator | None = None
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input, target, weights), each [..., N, max_seq_len], from prompt [..., N, P] and response [..., N, R]
    tokens. `invisible_token_weight`: the weight of invisible-keypoint targets (None: as any response token);
    `mask_inputs`: keypoints' input hiding (a ratio ~ U[0, 1) per call, each response input token replaced by the
    invisible token with that probability)."""
    label_seq = torch.cat([prompt, response], -1)
    length = label_seq.shape[-1]
    if length > max_seq_len + 1:
        raise ValueError(f"prompt + response is {length} tokens; max_seq_len must be at least {length - 1}")
    label_seq = torch.nn.functional.pad(label_seq, (0, max_seq_len + 1 - length), value=PADDING_TOKEN)
    inp, target = label_seq[..., :-1], label_seq[..., 1:]
    p = prompt.shape[-1]
    if mask_inputs:
        ratio = torch.rand((), generator=generator)
        hide = torch.rand(inp.shape, generator=generator) < ratio
        hide[..., :p] = False
        hide[..., length - 1:] = False  # only the response's inputs (its last token is never an input)
        inp = torch.where(hide.to(inp.device), torch.full_like(inp, INVISIBLE_TOKEN), inp)
    w = torch.zeros(target.shape, device=target.device)
    w[..., p - 1:length - 1] = 1.0
    if invisible_token_weight is not None:
        w = torch.where(target == INVISIBLE_TOKEN, torch.full_like(w, invisible_token_weight), w)
    w = torch.where(labels[..., None] > 0, w, torch.zeros_like(w))
    w = torch.where(target == PADDING_TOKEN, torch.full_like(w, eos_token_weight), w)
    return inp, target, w
