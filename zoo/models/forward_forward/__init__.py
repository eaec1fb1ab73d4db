"""Forward-Forward (Hinton 2022): math in model.py, Lightning glue in module.py."""
from zoo.models.forward_forward.module import ForwardForward

__all__ = ["ForwardForward"]
