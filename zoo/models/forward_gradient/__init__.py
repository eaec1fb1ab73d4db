"""Scaling Forward Gradient With Local Losses (paper 8): the forward-gradient estimators in model.py."""
from zoo.models.forward_gradient.model import activity_perturbed_gradient, weight_perturbed_gradient

__all__ = ["activity_perturbed_gradient", "weight_perturbed_gradient"]
