"""Neural Additive Models (paper 16): the grouped feature nets (model.py), the Lightning module (module.py), and the
shape-function figures and same-split baselines of the paper's comparison (analysis.py)."""
from zoo.models.nam.model import NAM
from zoo.models.nam.module import NAMModule

__all__ = ["NAM", "NAMModule"]
