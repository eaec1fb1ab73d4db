"""Scaling Forward Gradient With Local Losses (paper 8): forward-gradient estimators and the LocalMixer in
model.py, the Lightning module (LG-FG-A, FG-W and the backprop twin) in module.py."""
from zoo.models.forward_gradient.model import (LocalMixer, activity_gradient, activity_perturbed_gradient,
                                               estimator_error, forward_gradients, replicated_cross_entropy,
                                               true_gradients, weight_perturbed_gradient)
from zoo.models.forward_gradient.module import LocalMixerClassifier

__all__ = ["LocalMixer", "LocalMixerClassifier", "activity_gradient", "activity_perturbed_gradient",
           "estimator_error", "forward_gradients", "replicated_cross_entropy", "true_gradients",
           "weight_perturbed_gradient"]
