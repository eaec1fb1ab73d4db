"""Similarity of Neural Network Representations Revisited (paper 27): ten seeds of one small CNN trained side by
side, and the paper's layer-correspondence test of linear CKA, RBF CKA and CCA on them."""
from zoo.models.cka.correspondence import correspondence_accuracy, mean_between_members, similarity_matrices
from zoo.models.cka.model import GroupedTinyCNN, TinyCNN
from zoo.models.cka.module import SeedCNNs

__all__ = ["GroupedTinyCNN", "SeedCNNs", "TinyCNN", "correspondence_accuracy", "mean_between_members",
           "similarity_matrices"]
