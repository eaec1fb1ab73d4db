"""Pix2seq: A Language Modeling Framework for Object Detection (paper 11): the detection vocabulary, sequence
augmentation and decoding in tokenizer.py, the encoder-decoder with its key/value cache in model.py, the Lightning
module in module.py, the official checkpoints' converter in convert.py."""
from zoo.models.pix2seq import convert as _convert  # noqa: F401  (registers the converter)
from zoo.models.pix2seq.model import Pix2Seq
from zoo.models.pix2seq.module import Pix2SeqDetector

__all__ = ["Pix2Seq", "Pix2SeqDetector"]
