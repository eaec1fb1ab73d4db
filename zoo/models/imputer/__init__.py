"""Imputer: Sequence Modelling via Imputation and Dynamic Programming (paper 17): the network, its losses, masks and
block decoding (model.py) and its Lightning module (module.py)."""
from zoo.models.imputer.model import Imputer, block_decode, block_mask, imitation_loss, imputation_loss
from zoo.models.imputer.module import ImputerRecognizer

__all__ = ["Imputer", "ImputerRecognizer", "block_decode", "block_mask", "imitation_loss", "imputation_loss"]
