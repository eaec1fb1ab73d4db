"""Distilling a Neural Network Into a Soft Decision Tree (paper 30): a soft binary tree trained on labels or
on a teacher network's soft targets."""
from zoo.models.soft_tree.model import BalancePenalty, SoftDecisionTree, leaf_loss, node_levels
from zoo.models.soft_tree.module import DistilledSoftTree, SoftTreeClassifier

__all__ = ["BalancePenalty", "DistilledSoftTree", "SoftDecisionTree", "SoftTreeClassifier", "leaf_loss", "node_levels"]
