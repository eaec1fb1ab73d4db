"""Subclass distillation (Müller, Kornblith & Hinton 2020), the math: class logits from subclass logits, the
teacher's auxiliary loss that makes it use all its subclasses, the student's objective, and how well a set of
subclasses recovers hidden original classes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.losses import distillation_loss

TARGETS = ("subclass", "class", "labels")


def class_logits(subclass_logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[B, C·s] -> [B, C]: the log-sum-exp over each class's s subclass logits (the C groups are consecutive), so
    softmax(class logits)_c = Σ_{j in class c} softmax(subclass logits)_j: a class's probability is the sum of its
    subclasses' probabilities, computed without leaving log space."""
    return subclass_logits.unflatten(-1, (num_classes, -1)).logsumexp(-1)


def normalized_logits(subclass_logits: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """v_i = (z_i − mean(z_i)) / (std(z_i) · √n): every example's n subclass logits centred and scaled to unit
    length (mean and variance over that example's logits, as in the authors' code), so v_i·v_j is the correlation
    of the logit vectors of examples i and j."""
    n = subclass_logits.shape[-1]
    mean = subclass_logits.mean(-1, keepdim=True)
    var = subclass_logits.var(-1, unbiased=False, keepdim=True)
    return (subclass_logits - mean) * torch.rsqrt((var + eps) * n)


def auxiliary_loss(subclass_logits: torch.Tensor, temperature: float = 1.0, eps: float = 1e-9) -> torch.Tensor:
    """The teacher's auxiliary loss over a batch of n examples (the paper's L_aux):
    −(1/n) Σ_i log( exp(v_i·v_i / T) / Σ_j exp(v_i·v_j / T) ), with v the normalized subclass logits.

    A contrastive loss in which every example is its own class: it is low when the logit vectors of different
    examples are decorrelated, which a teacher can only achieve by spreading the batch over all its subclasses.
    The authors' code subtracts the constant log n from this (its minimum is then −log n); the gradient is the same.
    """
    v = normalized_logits(subclass_logits, eps)
    sim = v @ v.T / temperature
    return (sim.logsumexp(-1) - sim.diagonal()).mean()


def student_loss(student_logits: torch.Tensor, teacher_subclass_logits: torch.Tensor | None, labels: torch.Tensor,
                 num_classes: int, target: str, temperature: float, alpha: float) -> torch.Tensor:
    """The student's objective, α·T²·CE(teacher soft targets at T, student at T) + (1 − α)·CE(labels, classes).

    target "subclass": the student has C·s logits matched to the teacher's subclass distribution (subclass
    distillation), its class logits are their log-sum-exp; "class": the student has C logits matched to the
    teacher's class distribution (conventional distillation); "labels": the labels alone (no teacher).
    """
    if target == "labels":
        return F.cross_entropy(student_logits, labels)
    if target == "subclass":
        soft = distillation_loss(student_logits, teacher_subclass_logits, temperature)
        hard = F.cross_entropy(class_logits(student_logits, num_classes), labels)
    elif target == "class":
        soft = distillation_loss(student_logits, class_logits(teacher_subclass_logits, num_classes), temperature)
        hard = F.cross_entropy(student_logits, labels)
    else:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return alpha * soft + (1 - alpha) * hard


# ----------------------------------------------------------------------------- subclass recovery
def contingency(assigned: torch.Tensor, labels: torch.Tensor, num_assigned: int, num_labels: int) -> torch.Tensor:
    """counts[k, c]: how many examples went to subclass k and carry original class c."""
    flat = assigned.long() * num_labels + labels.long()
    return torch.bincount(flat, minlength=num_assigned * num_labels).view(num_assigned, num_labels)


def one_to_one_mapping(counts: torch.Tensor) -> torch.Tensor:
    """mapping[k]: the original class given to subclass k by the one-to-one assignment that maximises the number of
    examples whose subclass maps to their class (Hungarian algorithm on the contingency table)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(counts.double().numpy(), maximize=True)
    mapping = torch.full((counts.shape[0],), -1, dtype=torch.long)
    mapping[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
    return mapping


def recovery_accuracy(assigned: torch.Tensor, labels: torch.Tensor, mapping: torch.Tensor) -> float:
    """Fraction of examples whose subclass, mapped through `mapping`, is their original class."""
    return float((mapping[assigned.long()] == labels.long()).float().mean())


def normalized_mutual_information(assigned: torch.Tensor, labels: torch.Tensor) -> float:
    """NMI (arithmetic normalisation) between subclass assignments and original classes: 1 when one determines
    the other, 0 when independent; needs no mapping."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(labels.numpy(), assigned.numpy()))
