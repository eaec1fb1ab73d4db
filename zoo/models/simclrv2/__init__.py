"""SimCLRv2 (Chen, Kornblith, Swersky, Norouzi & Hinton 2020, arXiv 2006.10029): semi-supervised fine-tuning from
the projection head's first layer and distillation on unlabelled images. Pre-training is SimCLR with a 3-layer
head (`zoo.models.simclr`, head_layers=3)."""
from zoo.models.simclrv2.model import TunedNet
from zoo.models.simclrv2.module import SimCLRv2Distill, SimCLRv2FineTune

__all__ = ["SimCLRv2Distill", "SimCLRv2FineTune", "TunedNet"]
