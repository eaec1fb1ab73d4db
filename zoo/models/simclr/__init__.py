"""SimCLR (Chen, Kornblith, Norouzi & Hinton 2020, arXiv 2002.05709)."""
from zoo.models.simclr import convert as _convert  # noqa: F401  (registers the converter)
from zoo.models.simclr.model import ProjectionHead, SimCLRNet, resnet_encoder
from zoo.models.simclr.module import SimCLR

__all__ = ["ProjectionHead", "SimCLR", "SimCLRNet", "resnet_encoder"]
