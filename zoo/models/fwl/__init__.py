"""Meta-Learning Fast Weight Language Models (paper 2): the Fast Weight Layer block on a causal transformer LM
(model.py), its Lightning module with dynamic evaluation as the test-time baseline (module.py)."""
from zoo.models.fwl.model import FastWeightBlock, FWLTransformer, causal_linear_attention
from zoo.models.fwl.module import FWLLanguageModel, dynamic_evaluation

__all__ = ["FWLLanguageModel", "FWLTransformer", "FastWeightBlock", "causal_linear_attention", "dynamic_evaluation"]
