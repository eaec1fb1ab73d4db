"""Forward-Forward (Hinton 2022): math in model.py, Lightning glue in module.py."""
from zoo.models.forward_forward.module import (ForwardForward, ForwardForwardLocalRF, ForwardForwardUnsupervised,
                                               LocallyConnectedClassifier)

__all__ = ["ForwardForward", "ForwardForwardLocalRF", "ForwardForwardUnsupervised", "LocallyConnectedClassifier"]
