"""Backprop baselines that several papers compare against (same shape, same split, same data)."""
from zoo.models.baselines.module import CNNClassifier, MLPClassifier

__all__ = ["CNNClassifier", "MLPClassifier"]
