"""Pix2seq: A Language Modeling Framework for Object Detection (paper 11): the detection vocabulary, sequence
augmentation and decoding in tokenizer.py, the encoder-decoder with its key/value cache in model.py, the Lightning
module in module.py, the official checkpoints' converter in convert.py; Pix2seq v2 (paper 6), the same network
prompted for detection, instance segmentation and keypoints, in tasks.py (its sequences) and multitask.py."""
from zoo.models.pix2seq import convert as _convert  # noqa: F401  (registers the converter)
from zoo.models.pix2seq.model import Pix2Seq
from zoo.models.pix2seq.module import Pix2SeqDetector
from zoo.models.pix2seq.multitask import Pix2SeqMultiTask

__all__ = ["Pix2Seq", "Pix2SeqDetector", "Pix2SeqMultiTask"]
