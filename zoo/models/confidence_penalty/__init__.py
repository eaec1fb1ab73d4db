"""Regularizing Neural Networks by Penalizing Confident Output Distributions (paper 31): an MLP trained with the
confidence penalty −β·H(p), and the paper's MNIST comparison with dropout and label smoothing."""
from zoo.models.confidence_penalty.module import ConfidencePenaltyMLP

__all__ = ["ConfidencePenaltyMLP"]
