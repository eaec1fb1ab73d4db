"""Capsule networks and the CNN+R / CNN+CR baselines for adversarial detection by class-conditional
reconstruction (DARCCC; Detecting and Diagnosing Adversarial Images; Deflecting Adversarial Attacks):
math in model.py (and zoo.nn.capsules), Lightning glue in module.py."""
from zoo.models.capsnet.module import CapsNetClassifier, CNNCR, CNNR, ReconstructionClassifier

__all__ = ["CapsNetClassifier", "CNNCR", "CNNR", "ReconstructionClassifier"]
