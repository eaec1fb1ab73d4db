"""Gaussian-Bernoulli RBMs Without Tears (paper 1): the math and samplers (model.py), the Lightning module with
the modified CD (module.py), the paper's generated 2-D mixtures (data.py) and the sample measures (analysis.py)."""
from zoo.models.grbm.data import GMM2DDataModule
from zoo.models.grbm.model import GRBM, ChainStats
from zoo.models.grbm.module import GRBMModule

__all__ = ["GRBM", "ChainStats", "GMM2DDataModule", "GRBMModule"]
