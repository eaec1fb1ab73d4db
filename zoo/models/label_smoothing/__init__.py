"""When Does Label Smoothing Help? (paper 25): an MLP trained on smoothed targets, with the paper's calibration,
penultimate-layer and distillation measurements."""
from zoo.models.label_smoothing.module import LabelSmoothingMLP

__all__ = ["LabelSmoothingMLP"]
