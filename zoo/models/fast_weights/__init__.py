"""Using Fast Weights to Attend to the Recent Past (paper 33): the fast-weights RNN and the IRNN/LSTM controls
(model.py), the Lightning module (module.py) and the paper's generated associative-retrieval task (data.py)."""
from zoo.models.fast_weights.data import AssociativeRetrievalDataModule, associative_retrieval, decode
from zoo.models.fast_weights.model import IRNN, LSTM, FastWeightsRNN, RetrievalNet
from zoo.models.fast_weights.module import FastWeightsRetrieval

__all__ = ["AssociativeRetrievalDataModule", "FastWeightsRNN", "FastWeightsRetrieval", "IRNN", "LSTM", "RetrievalNet",
           "associative_retrieval", "decode"]
