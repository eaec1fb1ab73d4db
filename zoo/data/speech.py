"""Speech corpora in their real layouts, for the sequence-transduction papers (Graves et al. 2013, the Imputer).

* TIMIT (LDC93S1): `<root>/{TRAIN,TEST}/DR<n>/<speaker>/<utterance>.{WAV,PHN,TXT}` (any case), the audio in NIST
  SPHERE files (a 1024-byte text header, then 16-bit PCM), the phone alignment as "start end phone" lines in
  samples. Read with `read_sphere` and `read_phn`; `timit_utterances` lists a split, without the SA dialect
  sentences (as usual: every speaker reads the same two) and, for the test split, restricted to the 24-speaker
  core test set when asked (192 utterances).
* The 61 TIMIT phones and the standard folding to 39 for scoring (Lee & Hon 1989, used by Graves et al. 2013):
  `fold_39`; the glottal stop q is dropped.
* LibriSpeech (`read_librispeech`: FLAC audio and `*.trans.txt` transcripts) with phone targets from CMUdict
  (`read_cmudict`, `words_to_phones`; pocketsphinx's wheel ships the dictionary), and CMU Sphinx transcriptions
  (`read_sphinx_transcription`: the real clips of Debian's pocketsphinx-testdata).
* `filterbank_features`: the input of Graves et al. 2013 (§4): 40 log mel filterbank energies and the log frame
  energy, with their first and second temporal derivatives, 123 numbers per 10 ms frame. The mel filters come from
  librosa (the `speech` extra); the framing, power spectrum and derivatives are torch.
* `SpeechDataModule`: TIMIT, LibriSpeech or the synthetic corpus of zoo.data.speech_synth as normalised features
  and phone labels in length-bucketed batches (`BucketBatches`).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from zoo.data._base import BucketedData, LengthBuckets, data_folders, locate

TIMIT_PHONES = (
    "aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f g gcl h# hh hv ih ix iy jh k kcl "
    "l m n ng nx ow oy p pau pcl q r s sh t tcl th uh uw ux v w y z zh").split()
_FOLD = {"ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "hv": "hh", "ix": "ih", "el": "l", "em": "m", "en": "n",
         "nx": "n", "eng": "ng", "zh": "sh", "ux": "uw", "pcl": "sil", "tcl": "sil", "kcl": "sil", "bcl": "sil",
         "dcl": "sil", "gcl": "sil", "h#": "sil", "pau": "sil", "epi": "sil", "q": None}
PHONES_39 = tuple(sorted({_FOLD.get(p, p) for p in TIMIT_PHONES} - {None}))
#: the core test set: two men and one woman from each of the eight dialect regions (Garofolo et al. 1993)
CORE_TEST_SPEAKERS = frozenset(
    "MDAB0 MWBT0 FELC0 MTAS1 MWEW0 FPAS0 MJMP0 MLNT0 FPKT0 MLLL0 MTLS0 FJLM0 MBPM0 MKLT0 FNLP0 MCMJ0 MJDH0 FMGD0 "
    "MGRT0 MNJM0 FDHC0 MJLN0 MPAM0 FMLD0".split())


def fold_39(phones: list[str]) -> list[str]:
    """The 61-phone labels folded to the 39 scoring classes (q removed); an unknown phone is an error."""
    out = []
    for p in phones:
        if p not in TIMIT_PHONES:
            raise ValueError(f"{p!r} is not one of the 61 TIMIT phones")
        q = _FOLD.get(p, p)
        if q is not None:
            out.append(q)
    return out


def read_sphere(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """A NIST SPHERE file with uncompressed 16-bit PCM (TIMIT's .WAV): samples in [-1, 1) as float32 [channels, n]
    and the sample rate. Compressed (shorten) files and other sample widths are refused with what to do."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(b"NIST_1A"):
        raise ValueError(f"{path}: not a NIST SPHERE file (no NIST_1A magic); TIMIT's .WAV files are SPHERE, not RIFF")
    try:
        size = int(raw[8:16].split()[0])
        header = raw[16:size].decode("ascii", errors="replace")
    except (ValueError, IndexError):
        raise ValueError(f"{path}: unreadable SPHERE header") from None
    fields = {}
    for line in header.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1].startswith("-"):
            fields[parts[0]] = parts[2].strip()
    coding = fields.get("sample_coding", "pcm")
    if coding != "pcm" or fields.get("sample_n_bytes", "2") != "2":
        raise ValueError(f"{path}: sample_coding={coding!r}, sample_n_bytes={fields.get('sample_n_bytes')!r}; only "
                         "uncompressed 16-bit PCM is read (decompress shorten files with sph2pipe first)")
    channels = int(fields.get("channel_count", "1"))
    order = fields.get("sample_byte_format", "01")
    data = torch.frombuffer(bytearray(raw[size:]), dtype=torch.int16)
    if order == "10":
        data = data.view(torch.uint8).view(-1, 2).flip(1).reshape(-1).view(torch.int16)
    n = int(fields.get("sample_count", data.numel() // channels))
    data = data[: n * channels].view(n, channels).T.float() / 32768.0
    return data, int(fields.get("sample_rate", "16000"))


def read_phn(path: str | os.PathLike) -> list[tuple[int, int, str]]:
    """TIMIT .PHN: (start sample, end sample, phone) per line; a malformed line or an unknown phone is an error
    naming the file and line."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise ValueError(f"{path}:{i}: expected 'start end phone', got {line!r}")
        if parts[2] not in TIMIT_PHONES:
            raise ValueError(f"{path}:{i}: {parts[2]!r} is not one of the 61 TIMIT phones")
        out.append((int(parts[0]), int(parts[1]), parts[2]))
    return out


def _child(folder: Path, name: str) -> Path | None:
    """`folder/name` in whatever case the copy uses (TIMIT ships upper case, many copies are lower case)."""
    for p in (folder / name, folder / name.lower(), folder / name.upper()):
        if p.exists():
            return p
    return None


def timit_utterances(root: str | os.PathLike, split: str, core: bool = False) -> list[Path]:
    """The utterances (paths without extension) of TIMIT's TRAIN or TEST split, sorted, without the SA sentences;
    `core`: only the core test set's 24 speakers."""
    base = _child(Path(root), split.upper())
    if base is None:
        raise FileNotFoundError(f"{root}: no {split.upper()} folder: point data_dir at the folder holding TIMIT's "
                                "TRAIN and TEST")
    out = []
    for wav in sorted(base.glob("*/*/*")):
        if wav.suffix.upper() != ".WAV" or wav.name.upper().startswith("SA"):
            continue
        if core and wav.parent.name.upper() not in CORE_TEST_SPEAKERS:
            continue
        if not re.match(r"DR\d", wav.parent.parent.name.upper()):
            continue
        out.append(wav.with_suffix(""))
    return out


@lru_cache(maxsize=8)
def _mel_filters(rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    try:
        import librosa
    except ImportError:
        raise ImportError("the mel filterbank needs librosa: pip install 'hinton-zoo[speech]'") from None
    # HTK's mel scale and triangles of unit height, as the HTK front end the paper's features come from
    return torch.from_numpy(librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=rate / 2,
                                                htk=True, norm=None)).float()


def deltas(c: torch.Tensor, window: int = 2) -> torch.Tensor:
    """HTK's regression deltas over frames (dim −2): d_t = Σ_n n (c_{t+n} − c_{t−n}) / (2 Σ_n n²), n = 1..window,
    the first and last frames repeated at the edges."""
    n = torch.arange(1, window + 1, dtype=c.dtype, device=c.device)
    padded = F.pad(c.transpose(-1, -2)[None], (window, window), mode="replicate")[0].transpose(-1, -2)
    T = c.shape[-2]
    ahead = torch.stack([padded[..., window + k:window + k + T, :] for k in range(1, window + 1)], -1)
    behind = torch.stack([padded[..., window - k:window - k + T, :] for k in range(1, window + 1)], -1)
    return ((ahead - behind) * n).sum(-1) / (2 * n.square().sum())


def filterbank_features(audio: torch.Tensor, rate: int = 16000, n_mels: int = 40, win_ms: float = 25.0,
                        hop_ms: float = 10.0, preemphasis: float = 0.97, order: int = 2) -> torch.Tensor:
    """[frames, (n_mels + 1)·(order + 1)] from mono audio [n] (or [1, n]): pre-emphasis, Hamming windows of
    `win_ms` every `hop_ms`, power spectrum, log mel energies and log frame energy, then deltas up to `order`
    (Graves et al. 2013: 40 + 1 with Δ and ΔΔ, 123). Normalising each input to zero mean and unit variance over
    the training set is the data module's job."""
    x = audio.reshape(-1).float()
    x = torch.cat([x[:1], x[1:] - preemphasis * x[:-1]])
    win, hop = round(rate * win_ms / 1000), round(rate * hop_ms / 1000)
    if x.numel() < win:
        raise ValueError(f"{x.numel()} samples are shorter than one {win_ms} ms window at {rate} Hz")
    n_fft = 1 << (win - 1).bit_length()
    frames = x.unfold(0, win, hop) * torch.hamming_window(win, periodic=False)
    power = torch.fft.rfft(frames, n_fft).abs().square()
    tiny = torch.finfo(power.dtype).tiny
    mel = (power @ _mel_filters(rate, n_fft, n_mels).T).clamp_min(tiny).log()
    energy = frames.square().sum(-1, keepdim=True).clamp_min(tiny).log()
    feats = [torch.cat([mel, energy], -1)]
    for _ in range(order):
        feats.append(deltas(feats[-1]))
    return torch.cat(feats, -1)



# ------------------------------------------------------------------------------------------------ LibriSpeech, CMUdict
def read_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """FLAC/WAV/OGG through soundfile (the `speech` extra): float32 [channels, n] in [-1, 1) and the sample rate."""
    try:
        import soundfile
    except ImportError:
        raise ImportError("reading FLAC needs soundfile: pip install 'hinton-zoo[speech]'") from None
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), int(rate)


def read_librispeech(folder: str | os.PathLike) -> list[tuple[str, Path, list[str]]]:
    """One LibriSpeech split in its layout, `<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` (lines
    "ID WORD WORD ...") beside `ID.flac`: (id, audio path, words) sorted by id. A transcript line without its audio,
    or an empty transcript, is an error naming the file and line."""
    folder = Path(folder)
    out = []
    for trans in sorted(folder.glob("*/*/*.trans.txt")):
        for i, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{trans}:{i}: empty transcript for {parts[0]}")
            audio = trans.parent / f"{parts[0]}.flac"
            if not audio.is_file():
                raise FileNotFoundError(f"{trans}:{i}: {audio.name} is missing")
            out.append((parts[0], audio, parts[1:]))
    if not out:
        raise FileNotFoundError(f"{folder}: no */*/*.trans.txt transcripts (a LibriSpeech split such as "
                                "train-clean-100 is expected)")
    return sorted(out, key=lambda u: u[0])


def read_sphinx_transcription(path: str | os.PathLike) -> list[tuple[str, list[str]]]:
    """A CMU Sphinx transcription file, lines "<s> words </s> (utterance id)" (as in Debian's pocketsphinx-testdata,
    whose 10 real clips are a small real test set here): (id, words); a line without its id is an error naming the
    file and line."""
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*(.*?)\s*\(([^()]+)\)\s*", line)
        if m is None:
            raise ValueError(f"{path}:{i}: expected 'words (utterance id)', got {line!r}")
        words = [w for w in m.group(1).split() if w not in ("<s>", "</s>", "<sil>")]
        out.append((m.group(2), words))
    return out

#: where Debian's pocketsphinx-testdata puts its recordings (apt-get install pocketsphinx-testdata)
SPHINX_TEST_DATA = Path("/usr/share/pocketsphinx/test/data")


def real_clips(root: str | os.PathLike | None = None) -> list[tuple[str, Path, list[str]]]:
    """The real recordings of CMU Sphinx's test data (Debian's pocketsphinx-testdata): five LibriVox sentences read
    from Sense and Sensibility and five read card names, 16 kHz WAV with their words, as (id, audio path, words);
    [] where they are not installed. Ten clips, 38 seconds: a small real test set beside the synthetic corpus."""
    root = Path(root) if root else SPHINX_TEST_DATA
    out = []
    for trans in (root / "librivox" / "transcription", root / "cards" / "cards.transcription"):
        if trans.is_file():
            out += [(uid, trans.parent / f"{uid}.wav", words) for uid, words in read_sphinx_transcription(trans)]
    return out


def read_cmudict(path: str | os.PathLike) -> dict[str, list[str]]:
    """CMUdict as pocketsphinx ships it (`word PH PH ...`, alternatives as `word(2)`, stress already removed):
    lower-case word -> its first pronunciation."""
    lexicon: dict[str, list[str]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) < 2 or line.startswith(";;;"):
            continue
        word = re.sub(r"\(\d+\)$", "", parts[0]).lower()
        lexicon.setdefault(word, [re.sub(r"\d", "", p) for p in parts[1:]])
    return lexicon


def find_cmudict() -> Path:
    """CMUdict as the installed pocketsphinx wheel ships it (found without importing pocketsphinx)."""
    from zoo.data.text import _package_file

    path = _package_file("pocketsphinx", lambda f: f.endswith("cmudict-en-us.dict"))
    if path is None or not Path(path).is_file():
        raise FileNotFoundError("CMUdict not found: pip install pocketsphinx (its wheel ships cmudict-en-us.dict), "
                                "or pass the dictionary file")
    return Path(path)

def words_to_phones(words: list[str], lexicon: dict[str, list[str]]) -> list[str]:
    """The words' pronunciations, concatenated; words missing from the lexicon are an error listing them."""
    missing = [w for w in words if w.lower() not in lexicon]
    if missing:
        raise KeyError(f"not in the pronunciation dictionary: {sorted(set(missing))[:10]}")
    return [p for w in words for p in lexicon[w.lower()]]

# ------------------------------------------------------------------------------------------------ batches
class Utterance(NamedTuple):
    name: str
    features: torch.Tensor   # [frames, F]
    labels: torch.Tensor     # [U] phone ids, 1-based (0 is the blank)


def pad_batch(utts: list[Utterance]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features [B, T, F] zero-padded, lengths [B], labels [B, U] zero-padded, label lengths [B])."""
    x = torch.nn.utils.rnn.pad_sequence([u.features for u in utts], batch_first=True)
    y = torch.nn.utils.rnn.pad_sequence([u.labels for u in utts], batch_first=True)
    return (x, torch.tensor([len(u.features) for u in utts]), y, torch.tensor([len(u.labels) for u in utts]))


class BucketBatches(LengthBuckets):
    """Length-bucketed batches of utterances (zoo.data._base.LengthBuckets, ties by name), padded by `pad_batch`."""

    def __init__(self, utts: list[Utterance], batch_size: int, shuffle: bool, seed: int = 0, world: int = 1,
                 rank: int = 0, epoch: Callable[[], int] = lambda: 0):
        super().__init__(utts, batch_size, shuffle, seed, world, rank, epoch, key=lambda u: (len(u.features), u.name),
                         collate=pad_batch, what="utterances")


# ------------------------------------------------------------------------------------------------ the DataModule
CMUDICT_PHONES = tuple(sorted(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split()))
#: phone set name -> its labels (1-based ids in this order; 0 is the blank)
PHONE_SETS = {"timit61": tuple(TIMIT_PHONES), "cmudict39": CMUDICT_PHONES}
_GET = {"timit": "TIMIT is licensed by the LDC (LDC93S1, https://catalog.ldc.upenn.edu/LDC93S1): put the folder "
                 "holding its TRAIN and TEST in DIR",
        "librispeech": "download train-clean-100, dev-clean and test-clean from https://www.openslr.org/12 and "
                       "unpack them into DIR (DIR/LibriSpeech/<split>/...)",
        "synthetic": "write it with `python -m zoo.data.speech_synth DIR` (espeak-ng speaking Brown sentences)"}
_SPLITS = {"librispeech": ("train-clean-100", "dev-clean", "test-clean"), "synthetic": ("train", "validation", "test")}


def _progress(items: list, what: str):
    """A progress bar over the utterances whose features are being computed (tqdm, which huggingface_hub needs)."""
    from tqdm import tqdm

    return tqdm(items, desc=f"features: {what}", unit="utt", leave=False, disable=len(items) < 200)


class SpeechDataModule(BucketedData):
    """Utterances as filterbank features with phone labels, in length-bucketed batches (x, lengths, y, y_lengths).

    Args:
        dataset: "timit" (its 61 phones as labels; scored after `fold_39`), "librispeech" or "synthetic" (the
            derived corpus of zoo.data.speech_synth, in LibriSpeech's layout); for the last two the labels are
            the words' CMUdict phones (39), and utterances with a word outside the dictionary are left out.
        data_dir: looked in first, then `$ZOO_HOME/data/<dataset>`; the error says how to get the data.
        val_speakers: TIMIT only: training speakers held out for validation (by `seed`; TIMIT's development set
            is not part of its distribution). LibriSpeech validates on dev-clean, the synthetic corpus on its own
            validation split.
        core_test: TIMIT only: the 24-speaker core test set (else the whole TEST split, without SA sentences).
        splits: LibriSpeech's (train, validation, test) folders.
        cmudict: the pronunciation dictionary (default: pocketsphinx's, see find_cmudict).
        batch_size, eval_batch_size: utterances per batch and process.
        n_mels, order: the features (filterbank_features); inputs are normalised to zero mean and unit variance
            with the training set's statistics (`feature_mean`, `feature_std`).
        sample_rate: what the audio must be (TIMIT and LibriSpeech 16 kHz; espeak-ng writes 22,050 Hz).
        max_utterances: read at most this many utterances per split (None: all), for quick runs.

    The features of every split are computed once in `setup` (with a progress bar) and held in memory, about
    0.5 GB per 3 hours of audio: TIMIT's 5 hours fit anywhere, LibriSpeech's train-clean-100 needs about 18 GB
    (or `max_utterances`).
    """

    def __init__(self, dataset: str = "timit", data_dir: str | None = None, val_speakers: int = 50,
                 core_test: bool = True, splits: tuple[str, str, str] | None = None, cmudict: str | None = None,
                 batch_size: int = 8, eval_batch_size: int = 8, n_mels: int = 40, order: int = 2, seed: int = 0,
                 sample_rate: int | None = None, max_utterances: int | None = None):
        super().__init__()
        if dataset not in _GET:
            raise ValueError(f"dataset must be one of {sorted(_GET)}, got {dataset!r}")
        self.dataset, self.data_dir, self.val_speakers, self.core_test = dataset, data_dir, val_speakers, core_test
        self.split_names = tuple(splits or _SPLITS.get(dataset, ("TRAIN", "", "TEST")))
        self.cmudict, self.max_utterances = cmudict, max_utterances
        self.batch_size, self.eval_batch_size, self.n_mels, self.order = batch_size, eval_batch_size, n_mels, order
        self.seed = seed
        self.sample_rate = sample_rate or (22050 if dataset == "synthetic" else 16000)
        self.splits: dict[str, list[Utterance]] = {}
        self.feature_mean = self.feature_std = None

    @property
    def phone_set(self) -> str:
        return "timit61" if self.dataset == "timit" else "cmudict39"

    @property
    def num_phones(self) -> int:
        return len(PHONE_SETS[self.phone_set])

    @property
    def in_features(self) -> int:
        return (self.n_mels + 1) * (self.order + 1)

    def locate(self) -> Path:
        if self.dataset == "timit":
            def find(folder: Path) -> Path | None:
                return folder if folder.is_dir() and _child(folder, "TRAIN") and _child(folder, "TEST") else None
            sub, what = "TIMIT", "TIMIT's TRAIN and TEST folders"
        else:
            def find(folder: Path) -> Path | None:
                return folder if all((folder / s).is_dir() for s in self.split_names) else None
            sub, what = ("LibriSpeech" if self.dataset == "librispeech" else None,
                         f"{self.dataset}'s {', '.join(self.split_names)} folders")
        return locate(data_folders(self.data_dir, self.dataset, subfolder=sub), find, what,
                      f"{_GET[self.dataset]}, then pass --data.init_args.data_dir=DIR.")

    def prepare_data(self) -> None:
        self.locate()

    def _features(self, audio: torch.Tensor, rate: int, where: Path) -> torch.Tensor:
        if rate != self.sample_rate:
            raise ValueError(f"{where}: audio at {rate} Hz where {self.sample_rate} Hz is expected: resample it (e.g. "
                             f"sox in.wav -r {self.sample_rate} out.wav) or pass --data.init_args.sample_rate={rate}")
        return filterbank_features(audio[0], rate, self.n_mels, order=self.order)

    def read(self, stem: Path) -> Utterance:
        """One TIMIT utterance: features of its .WAV, labels of its .PHN (errors name the file)."""
        wav = next(p for p in (stem.with_suffix(".WAV"), stem.with_suffix(".wav")) if p.is_file())
        phn = next((p for p in (stem.with_suffix(".PHN"), stem.with_suffix(".phn")) if p.is_file()), None)
        if phn is None:
            raise FileNotFoundError(f"{wav} has no .PHN alignment beside it")
        phones = [p for _, _, p in read_phn(phn)]
        if not phones:
            raise ValueError(f"{phn}: empty alignment (no phones)")
        labels = torch.tensor([TIMIT_PHONES.index(p) + 1 for p in phones])
        return Utterance(f"{stem.parent.name}/{stem.name}", self._features(*read_sphere(wav), wav), labels)

    def _timit(self, root: Path) -> dict[str, list[Utterance]]:
        train = timit_utterances(root, "train")
        speakers = sorted({p.parent.name.upper() for p in train})
        if not 0 <= self.val_speakers < len(speakers):
            raise ValueError(f"val_speakers={self.val_speakers} must leave training speakers: TIMIT's TRAIN has "
                             f"{len(speakers)}")
        perm = torch.randperm(len(speakers), generator=torch.Generator().manual_seed(self.seed)).tolist()
        held = {speakers[i] for i in perm[: self.val_speakers]}
        stems = {"train": [p for p in train if p.parent.name.upper() not in held],
                 "validation": [p for p in train if p.parent.name.upper() in held],
                 "test": timit_utterances(root, "test", core=self.core_test)}
        return {k: [self.read(p) for p in _progress(v[: self.max_utterances], f"timit {k}")]
                for k, v in stems.items()}

    def _transcribed(self, root: Path) -> dict[str, list[Utterance]]:
        lexicon = read_cmudict(self.cmudict or find_cmudict())
        ids = {p: i + 1 for i, p in enumerate(CMUDICT_PHONES)}
        out = {}
        for key, folder in zip(("train", "validation", "test"), self.split_names):
            utts, skipped = [], 0
            for name, audio_path, words in _progress(read_librispeech(root / folder)[: self.max_utterances],
                                                     f"{self.dataset} {folder}"):
                try:
                    phones = words_to_phones(words, lexicon)
                except KeyError:
                    skipped += 1
                    continue
                feats = self._features(*read_audio(audio_path), audio_path)
                utts.append(Utterance(name, feats, torch.tensor([ids[p] for p in phones])))
            if skipped:
                print(f"{self.dataset} {folder}: {skipped} utterance(s) left out, a word not in the dictionary")
            out[key] = utts
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        root = self.locate()
        splits = self._timit(root) if self.dataset == "timit" else self._transcribed(root)
        for k, v in splits.items():
            if not v:
                raise ValueError(f"the {k} split of {root} holds no utterances")
        frames = torch.cat([u.features for u in splits["train"]])
        self.feature_mean, self.feature_std = frames.mean(0), frames.std(0).clamp_min(1e-5)
        self.splits = {k: [u._replace(features=(u.features - self.feature_mean) / self.feature_std) for u in v]
                       for k, v in splits.items()}

    def buckets(self, split, batch_size, shuffle, world, rank, epoch) -> BucketBatches:
        return BucketBatches(self.splits[split], batch_size, shuffle, self.seed, world, rank, epoch)
