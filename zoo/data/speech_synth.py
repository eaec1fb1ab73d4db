"""A derived speech corpus, named as such: real English sentences (the Brown corpus) spoken by the espeak-ng speech
synthesiser over several voices, speaking rates and pitches, with Gaussian noise added at a random signal-to-noise
ratio. It is synthetic speech, not TIMIT or LibriSpeech, and is described that way wherever it is used; it exists
so that the speech papers have a recipe that trains without licensed data.

The corpus is written in LibriSpeech's layout, so `zoo.data.speech.read_librispeech` reads it:
`<out>/<split>/<voice>/<document>/<voice>-<document>-<n>.flac` beside `<voice>-<document>.trans.txt`. Brown's
documents are split into train/validation/test by seed (no sentence crosses splits) and the test split is spoken by
voices held out of training (speaker-independent, as TIMIT's test speakers are). Only sentences whose every word is
in the pronunciation dictionary are kept, so every utterance has phone targets.

    python -m zoo.data.speech_synth OUT [--sentences-per-split 2000 500 500] [--seed 0]

needs espeak-ng (`apt-get install espeak-ng`), the Brown corpus (see zoo.data.TextDataModule) and the `speech`
extra; CMUdict is read from the pocketsphinx wheel's files (`pip install pocketsphinx`) or `--cmudict FILE`.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

#: (voice, held out for testing): espeak-ng's American and British English with its male and female variants
VOICES = (("en-us+m1", False), ("en-us+m3", False), ("en-us+f1", False), ("en-us+f3", False), ("en-gb+m2", False),
          ("en-gb+f2", False), ("en-us+m5", True), ("en-gb+f4", True))
_WORD = re.compile(r"^[a-z]+('[a-z]+)?$")


def speakable(sentence: str, lexicon: dict[str, list[str]], shortest: int = 4, longest: int = 20) -> list[str] | None:
    """The sentence's words, lower-cased without punctuation tokens, when all are plain words in the lexicon (no
    numbers, which the synthesiser would speak but the targets would lack) and there are `shortest` to `longest` of
    them; else None."""
    words = [w.lower() for w in sentence.split() if re.search(r"[A-Za-z0-9]", w)]
    if not shortest <= len(words) <= longest or not all(_WORD.match(w) and w in lexicon for w in words):
        return None
    return words


def speak(words: list[str], voice: str, rate: int, pitch: int, snr_db: float, generator: torch.Generator,
          espeak: str = "espeak-ng") -> tuple[torch.Tensor, int]:
    """espeak-ng's audio of the words (mono float32 [n]) with white noise at `snr_db`, and its sample rate."""
    from zoo.data.speech import read_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "u.wav"
        subprocess.run([espeak, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(wav), " ".join(words)],
                       check=True, capture_output=True)
        audio, sr = read_audio(wav)
    audio = audio[0]
    power = audio.square().mean().clamp_min(1e-10)
    noise = torch.randn(audio.shape, generator=generator) * (power / 10 ** (snr_db / 10)).sqrt()
    return (audio + noise).clamp(-1, 1 - 2 ** -15), sr


def write_corpus(out: str | Path, documents: dict[str, list[tuple[str, list[str]]]], seed: int = 0,
                 rates: tuple[int, int] = (130, 200), pitches: tuple[int, int] = (30, 70),
                 snr_db: tuple[float, float] = (10.0, 30.0), espeak: str = "espeak-ng", progress: bool = True) -> Path:
    """Speak `documents` {split: [(document, words), ...]} into `out` in LibriSpeech's layout: each sentence by a
    voice drawn from the split's voices (test: the held-out ones), at a rate, pitch and SNR drawn uniformly."""
    import soundfile

    if shutil.which(espeak) is None:
        raise FileNotFoundError(f"{espeak} not found: apt-get install espeak-ng (or pass espeak=PATH)")
    out = Path(out)
    g = torch.Generator().manual_seed(seed)
    for split, sentences in documents.items():
        voices = [v for v, held in VOICES if held == (split == "test")]
        lines: dict[Path, list[str]] = {}
        counts: dict[tuple[str, str], int] = {}
        items = sentences
        if progress:
            from tqdm import tqdm
            items = tqdm(sentences, desc=f"speaking {split}", unit="sentence")
        for doc, words in items:
            u = torch.rand(4, generator=g).tolist()
            voice = voices[int(u[0] * len(voices))]
            slug = voice.replace("+", "-")
            n = counts[(slug, doc)] = counts.get((slug, doc), -1) + 1
            folder = out / split / slug / doc
            folder.mkdir(parents=True, exist_ok=True)
            audio, sr = speak(words, voice, round(rates[0] + u[1] * (rates[1] - rates[0])),
                              round(pitches[0] + u[2] * (pitches[1] - pitches[0])),
                              snr_db[0] + u[3] * (snr_db[1] - snr_db[0]), g, espeak)
            utt = f"{slug}-{doc}-{n:04d}"
            soundfile.write(str(folder / f"{utt}.flac"), audio.numpy(), sr)
            lines.setdefault(folder / f"{slug}-{doc}.trans.txt", []).append(f"{utt} {' '.join(words).upper()}")
        for path, text in lines.items():
            path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return out


def brown_sentences(lexicon: dict[str, list[str]], per_split: tuple[int, int, int], seed: int = 0,
                    data_dir: str | None = None) -> dict[str, list[tuple[str, list[str]]]]:
    """Speakable Brown sentences, the documents split 400/50/50 by `seed` as zoo.data.TextDataModule splits them,
    the first `per_split` (train, validation, test) sentences of each split in document order."""
    from zoo.data.text import TextDataModule

    dm = TextDataModule("brown", data_dir=data_dir, split_seed=seed)
    splits = dm.read_splits()
    out = {}
    for (split, docs), n in zip((("train", splits["train"]), ("validation", splits["validation"]),
                                 ("test", splits["test"])), per_split):
        kept = [(name, w) for name, lines in docs for w in (speakable(s, lexicon) for s in lines) if w]
        out[split] = kept[:n]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--sentences-per-split", type=int, nargs=3, default=(2000, 500, 500))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cmudict", type=Path, help="CMUdict file (default: the installed pocketsphinx wheel's)")
    p.add_argument("--brown-dir", help="where the Brown corpus is (default: where TextDataModule looks)")
    a = p.parse_args()
    from zoo.data.speech import find_cmudict, read_cmudict

    lexicon = read_cmudict(a.cmudict or find_cmudict())
    write_corpus(a.out, brown_sentences(lexicon, tuple(a.sentences_per_split), a.seed, a.brown_dir), a.seed)
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
