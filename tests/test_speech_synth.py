"""The derived (synthetic) speech corpus: which sentences are kept, the LibriSpeech layout it is written in, voices
held out for the test split, the noise at the drawn SNR, and espeak-ng itself where it is installed."""
import shutil
import stat
import sys

import pytest
import torch

from zoo.data.speech import read_audio, read_librispeech
from zoo.data.speech_synth import VOICES, speak, speakable, write_corpus

LEXICON = {w: ["AH"] for w in "the whale was white and it swam far away".split()}


def test_only_plain_sentences_of_known_words_are_kept():
    assert speakable("The whale was white , and it swam .", LEXICON) == \
        ["the", "whale", "was", "white", "and", "it", "swam"]
    assert speakable("The whale was grey .", LEXICON) is None     # a word outside the dictionary
    assert speakable("The whale .", LEXICON) is None              # too short
    assert speakable("The whale was 1960 white", LEXICON) is None  # a token that is not a plain word


@pytest.fixture
def fake_espeak(tmp_path):
    """An executable with espeak-ng's command line that writes a 22,050 Hz tone whose length follows the text."""
    script = tmp_path / "espeak"
    script.write_text(f"""#!{sys.executable}
import sys, math, numpy, soundfile
args = sys.argv[1:]
out = args[args.index("-w") + 1]
n = 2205 * len(args[-1].split())
soundfile.write(out, 0.5 * numpy.sin(numpy.arange(n) * 2 * math.pi * 440 / 22050), 22050)
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_corpus_is_written_in_librispeech_layout_with_held_out_test_voices(tmp_path, fake_espeak):
    docs = {"train": [("ca01", ["the", "whale"]), ("ca01", ["it", "swam", "far"]), ("cb02", ["the", "whale"])],
            "test": [("cc03", ["and", "it", "swam", "away"])]}
    out = write_corpus(tmp_path / "synth", docs, seed=0, espeak=fake_espeak, progress=False)
    train = read_librispeech(out / "train")
    assert sorted(u[2] for u in train) == sorted([["THE", "WHALE"], ["IT", "SWAM", "FAR"], ["THE", "WHALE"]])
    held = {v.replace("+", "-") for v, h in VOICES if h}
    assert all(u[0].rsplit("-", 2)[0] not in held for u in train)
    (test,) = read_librispeech(out / "test")
    assert test[0].rsplit("-", 2)[0] in held and test[2] == ["AND", "IT", "SWAM", "AWAY"]
    audio, rate = read_audio(test[1])
    assert rate == 22050 and audio.shape[1] == 4 * 2205


def test_noise_is_added_at_the_drawn_snr(fake_espeak):
    audio, _ = speak(["the", "whale", "was", "white"] * 5, "en-us", 150, 50, 20.0, torch.Generator().manual_seed(0),
                     fake_espeak)
    clean = 0.5 * torch.sin(torch.arange(audio.numel()) * 2 * torch.pi * 440 / 22050)
    snr = 10 * torch.log10(clean.square().mean() / (audio - clean).square().mean())
    assert abs(snr.item() - 20.0) < 0.5


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_ng_speaks():
    audio, rate = speak(["the", "whale"], "en-us+f3", 160, 50, 30.0, torch.Generator().manual_seed(0))
    assert rate == 22050 and 0.2 < audio.numel() / rate < 3 and audio.abs().max() > 0.05
