"""Analyzing and Improving Representations with the Soft Nearest Neighbor Loss (paper 28): math in model.py,
Lightning glue in module.py."""
from zoo.models.snnl.module import SNNLClassifier

__all__ = ["SNNLClassifier"]
