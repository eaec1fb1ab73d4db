"""Building blocks shared by several papers."""
from zoo.nn.mlp import MLP

__all__ = ["MLP"]
