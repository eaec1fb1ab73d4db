"""Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer (paper 32): the LSTM-MoE-LSTM
language model of §5.1 (model.py) and its Lightning module (module.py). The MoE layer itself is zoo.nn.MoE."""
from zoo.models.moe_lm.model import LMOutput, MoELM
from zoo.models.moe_lm.module import MoELanguageModel

__all__ = ["LMOutput", "MoELM", "MoELanguageModel"]
