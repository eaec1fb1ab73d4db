"""Speech Recognition with Deep Recurrent Neural Networks (paper 36): the deep bidirectional LSTM with a CTC output
layer or as the transcription network of an RNN transducer (model.py), and its Lightning module (module.py)."""
from zoo.models.speech_rnn.model import CTCNet, DeepBLSTM, Transducer, best_path
from zoo.models.speech_rnn.module import SpeechRecognizer

__all__ = ["CTCNet", "DeepBLSTM", "SpeechRecognizer", "Transducer", "best_path"]
