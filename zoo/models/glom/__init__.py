"""GLOM (paper 12): columns of level embeddings settling into islands of agreement, trained on ellipse world with
labels (Culp, Sabour & Hinton's test) or on images as a masked denoising autoencoder (the GLOM paper's proposal)."""
from zoo.models.glom.model import GLOM, island_scores
from zoo.models.glom.module import GLOMModule

__all__ = ["GLOM", "GLOMModule", "island_scores"]
