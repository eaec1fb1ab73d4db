"""Deep Mixtures of Factor Analysers (Tang, Salakhutdinov & Hinton 2012): math in model.py, Lightning glue
(EM inside a LightningModule) in module.py."""
from zoo.models.dmfa.module import DMFAModule, MFAModule

__all__ = ["DMFAModule", "MFAModule"]
