"""Building blocks shared by several papers."""
from zoo.nn.cnn import ConvNet
from zoo.nn.mlp import MLP

__all__ = ["ConvNet", "MLP"]
