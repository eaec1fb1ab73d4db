"""Gaussian-Bernoulli RBMs Without Tears (paper 1): the model's math and samplers in model.py."""
from zoo.models.grbm.model import GRBM

__all__ = ["GRBM"]
