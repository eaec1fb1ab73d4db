"""Speech Recognition with Deep Recurrent Neural Networks (paper 36): the deep bidirectional LSTM with a CTC output
layer or as the transcription network of an RNN transducer (model.py). Not registered yet: its speech DataModule
and recipes come next (issue 14)."""
from zoo.models.speech_rnn.model import CTCNet, DeepBLSTM, Transducer, best_path

__all__ = ["CTCNet", "DeepBLSTM", "Transducer", "best_path"]
