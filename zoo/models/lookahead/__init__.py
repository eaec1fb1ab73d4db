"""Lookahead Optimizer: k steps forward, 1 step back (paper 23): the optimiser is zoo.optim.Lookahead; the sweep
in model.py, Lightning glue in module.py."""
from zoo.models.lookahead.module import LookaheadCNN

__all__ = ["LookaheadCNN"]
