"""REMEDIS (arXiv 2205.09723): BiT supervised pre-training, SimCLR on unlabelled in-domain images, fine-tuning."""
from zoo.models.remedis import convert as _convert  # noqa: F401  (registers the BiT converter)
from zoo.models.remedis.model import REMEDISNet
from zoo.models.remedis.module import REMEDIS

__all__ = ["REMEDIS", "REMEDISNet"]
