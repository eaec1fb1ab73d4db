"""Canonical Capsules: Self-Supervised Capsules in Canonical Pose (paper 13): capsule decompositions of point
clouds and a learned canonical frame, from pairs of random poses."""
from zoo.models.canonical_capsules import convert as _convert  # noqa: F401  (registers the converter)
from zoo.models.canonical_capsules.model import (ACNeEncoder, CanonicalCapsules, Capsules, CapsuleDecoders,
                                                 chamfer_loss, procrustes, random_poses)
from zoo.models.canonical_capsules.module import CanonicalCapsulesModule

__all__ = ["ACNeEncoder", "CanonicalCapsules", "CanonicalCapsulesModule", "CapsuleDecoders", "Capsules",
           "chamfer_loss", "procrustes", "random_poses"]
