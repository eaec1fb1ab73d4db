"""Pix2seq v2's captioning task (Chen et al., NeurIPS 2022; google-research/pix2seq `tasks/captioning.py`,
`data/tokenizer.py`, `vocab.py`, `configs/config_multi_task.py`).

Text is cut into SentencePiece pieces. The official model uses a 32k-piece model trained on C4 (T5's layout: piece 0
padding, 1 end of sentence, 2 unknown, no start token; an end token appended to every caption); here a unigram
model with the same layout is trained on the training captions at hand (`train_tokenizer`), and the model keeps its
serialised bytes, so a release carries the tokenizer it was trained with. A caption's pieces are shifted by
`text_vocab_shift` (official 3000, past the coordinate tokens) into the shared vocabulary.

Training sequence of one caption: [13 (the captioning prompt), pieces + shift..., end + shift, 0...] of
`max_len` + 1 tokens (pieces beyond `max_len` cut), shifted into input and target; every target has weight 1 (the
padding after the end token too, as officially) except the end token's, `eos_token_weight` (0.1). Input tokens,
the prompt included as in the official code, are replaced with probability `input_seq_drop_rate` (0.5) by the fake
text token 30. Each image gives `captions_per_image` (5) sequences, its first captions.

Decoding samples the whole length (top-p 1.0, temperature 1), removes the shift, clips to the tokenizer's pieces and
detokenises; unlike the official code, which detokenises every sampled piece, the caption ends at its first end
or padding token (a trained model emits padding there, so the two agree but for pieces sampled after the end).
"""
from __future__ import annotations

import re

import torch

CAPTIONING_TASK = 13
FAKE_TEXT_TOKEN = 30
PAD_PIECE, EOS_PIECE, UNK_PIECE = 0, 1, 2


def _spm():
    try:
        import sentencepiece
    except ImportError as err:
        raise ImportError("Pix2seq v2's captioning needs sentencepiece: pip install 'hinton-zoo[detection]'") from err
    return sentencepiece


def train_tokenizer(texts: list[str], vocab_size: int) -> bytes:
    """A SentencePiece unigram model of `texts` with at most `vocab_size` pieces (fewer where the text has fewer:
    the limit is soft), in T5's layout (pad 0, end 1, unknown 2, no start), returned serialised. Deterministic for
    the same texts and size."""
    import io

    spm = _spm()
    if not texts:
        raise ValueError("no captions to train the caption tokenizer on: the training split has none")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        pad_id=PAD_PIECE, eos_id=EOS_PIECE, unk_id=UNK_PIECE, bos_id=-1, hard_vocab_limit=False,
        character_coverage=1.0, num_threads=1, minloglevel=2)
    return model.getvalue()


class CaptionTokenizer:
    """Text <-> SentencePiece ids of a serialised model (`train_tokenizer` or the official .model file's bytes)."""

    def __init__(self, model: bytes):
        self.sp = _spm().SentencePieceProcessor(model_proto=model)
        if self.sp.pad_id() != PAD_PIECE or self.sp.eos_id() != EOS_PIECE:
            raise ValueError(f"the caption tokenizer must put padding at {PAD_PIECE} and the end at {EOS_PIECE} "
                             f"(T5's layout, as the official one); it has {self.sp.pad_id()} and {self.sp.eos_id()}")

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Each text's piece ids with the end piece appended (official add_eos=True)."""
        return [ids + [EOS_PIECE] for ids in self.sp.encode(list(texts))]

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.sp.decode([[i for i in row if i not in (PAD_PIECE, EOS_PIECE)] for row in ids])


def caption_training_sequences(ids: list[list[list[int]]], captions_per_image: int, max_len: int, shift: int,
                               eos_token_weight: float, input_seq_drop_rate: float = 0.0,
                               generator: torch.Generator | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input, target, weights), each [B, captions_per_image, max_len], from each image's captions as piece ids
    (`CaptionTokenizer.encode`); an image's first captions_per_image are used, missing ones are all padding with
    weight 0."""
    b = len(ids)
    response = torch.zeros(b, captions_per_image, max_len, dtype=torch.long)
    present = torch.zeros(b, captions_per_image, 1)
    for i, captions in enumerate(ids):
        for j, pieces in enumerate(captions[:captions_per_image]):
            pieces = pieces[:max_len]
            response[i, j, :len(pieces)] = torch.tensor(pieces, dtype=torch.long) + shift
            present[i, j] = 1.0
    label_seq = torch.cat([torch.full((b, captions_per_image, 1), CAPTIONING_TASK), response], -1)
    inp, target = label_seq[..., :-1], label_seq[..., 1:]
    w = torch.where(target == EOS_PIECE + shift, eos_token_weight, 1.0) * present
    if input_seq_drop_rate > 0:
        drop = torch.rand(inp.shape, generator=generator) < input_seq_drop_rate
        inp = torch.where(drop, torch.full_like(inp, FAKE_TEXT_TOKEN), inp)
    return inp, target, w


def tokens_to_pieces(tokens: torch.Tensor, shift: int, num_pieces: int) -> list[list[int]]:
    """Sampled tokens [B, N] -> piece ids per caption, cut at the first end or padding token; other tokens lose the
    shift and are clipped to the tokenizer's pieces (official postprocess)."""
    stop = (tokens == PAD_PIECE) | (tokens == EOS_PIECE + shift)
    length = torch.where(stop.any(1), stop.int().argmax(1), tokens.shape[1])
    pieces = (tokens - shift).clamp(0, num_pieces - 1)
    return [row[:n] for row, n in zip(pieces.tolist(), length.tolist())]


_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def caption_words(text: str) -> str:
    """Lower-cased words without punctuation, space-separated: what BLEU counts n-grams of (COCO's caption
    evaluation also lower-cases and drops punctuation before scoring)."""
    return " ".join(_WORD.findall(text.lower()))
