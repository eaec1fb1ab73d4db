"""Pix2seq v2's instance-task sequences (instance segmentation, keypoints) against sequences written out by hand from
the official task code's rules."""
from __future__ import annotations

import pytest
import torch

from zoo.models.pix2seq.tasks import (INSTANCE_SEGMENTATION_TASK, INVISIBLE_TOKEN, KEYPOINT_TASK, SEPARATOR_TOKEN,
                                      instance_prompt, instance_training_sequences, points_to_tokens,
                                      tokens_to_points)

BINS, SHIFT = 11, 200  # bin q of v is round(10 v): readable by hand


def test_prompt_and_points_by_hand():
    boxes = torch.tensor([[[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]]])
    labels = torch.tensor([[3, 0]])
    prompt = instance_prompt(INSTANCE_SEGMENTATION_TASK, boxes, labels, BINS, SHIFT)
    assert prompt.tolist() == [[[11, 201, 202, 205, 209, 103], [0] * 6]]
    # a polygon (0, 1), separator, (0.5, 0.3), an invisible keypoint pair, padding
    points = torch.tensor([[[0.0, 1.0, -2.0, 0.5, 0.3, -3.0, -3.0, -1.0]] * 2])
    seq = points_to_tokens(points, labels, BINS, SHIFT)
    assert seq.tolist() == [[[200, 210, SEPARATOR_TOKEN, 205, 203, INVISIBLE_TOKEN, INVISIBLE_TOKEN, 0], [0] * 8]]
    assert torch.allclose(tokens_to_points(seq[:, :1], BINS, SHIFT), points[:, :1])


def test_training_sequences_shift_and_weigh_as_the_official_task():
    labels = torch.tensor([2, 0])
    prompt = instance_prompt(KEYPOINT_TASK, torch.tensor([[0.1, 0.1, 0.4, 0.4]] * 2), labels, BINS, SHIFT)
    response = points_to_tokens(torch.tensor([[0.2, 0.3, -3.0, -3.0]] * 2), labels, BINS, SHIFT)
    inp, target, w = instance_training_sequences(prompt, response, labels, max_seq_len=12, eos_token_weight=0.5,
                                                 invisible_token_weight=0.1)
    full = [12, 201, 201, 204, 204, 102, 202, 203, 41, 41, 0, 0, 0]
    assert inp[0].tolist() == full[:-1] and target[0].tolist() == full[1:]
    # targets 1-5 are the prompt's rest (0), then the response (1; invisible 0.1), then padding (eos weight)
    assert w[0].tolist() == pytest.approx([0, 0, 0, 0, 0, 1, 1, 0.1, 0.1, 0.5, 0.5, 0.5])
    assert w[1].tolist() == [0.5] * 12  # a padding object: nothing but its all-padding targets
    inp_s, _, w_s = instance_training_sequences(prompt, response, labels, 12, eos_token_weight=1.0)
    assert w_s[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1] and torch.equal(inp_s, inp)


def test_keypoint_inputs_are_hidden_only_in_the_response():
    labels = torch.ones(500, dtype=torch.long)
    prompt = instance_prompt(KEYPOINT_TASK, torch.rand(500, 4).sort(-1).values, labels, BINS, SHIFT)
    response = points_to_tokens(torch.rand(500, 34), labels, BINS, SHIFT)
    plain, target, _ = instance_training_sequences(prompt, response, labels, 39, 0.0, 0.1)
    g = torch.Generator().manual_seed(0)
    inp, target2, _ = instance_training_sequences(prompt, response, labels, 39, 0.0, 0.1, mask_inputs=True,
                                                  generator=g)
    assert torch.equal(target, target2)  # targets are never hidden
    hidden = inp != plain
    assert torch.all(inp[hidden] == INVISIBLE_TOKEN)
    assert not hidden[:, :6].any()  # the prompt is never hidden
    assert hidden[:, 6:].float().mean() > 0  # response inputs are (at the ratio this seed drew)
    ratio = torch.rand((), generator=torch.Generator().manual_seed(0))
    assert abs(hidden[:, 6:].float().mean() - ratio) < 0.02
