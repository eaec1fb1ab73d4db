"""Distilling the Knowledge in a Neural Network (paper 34): a student MLP trained on a teacher's soft targets."""
from zoo.models.distillation.module import DistilledMLP

__all__ = ["DistilledMLP"]
