"""Grammar as a Foreign Language (paper 35): the attention sequence-to-sequence parser (model.py) and its Lightning
module (module.py); trees, linearisation, repair and EVALB scoring are in zoo.data.parsing."""
from zoo.models.seq2seq_parser.model import Seq2SeqParser, reverse_within, sequence_loss
from zoo.models.seq2seq_parser.module import SequenceParser

__all__ = ["Seq2SeqParser", "SequenceParser", "reverse_within", "sequence_loss"]
