"""Constituency parsing as sequence transduction (Vinyals et al. 2015, "Grammar as a Foreign Language"): trees and
their Penn Treebank text, the paper's linearisation and the repair of malformed output, labelled-bracket scoring as
EVALB does it with COLLINS.prm, a reader for the Penn Treebank's WSJ `.mrg` files with the standard split, and a
SYNTHETIC treebank generated from a small English grammar over real Brown-corpus words (no treebank is reachable
here; it is named and described as synthetic wherever it is used).

* `Tree`: a label and children; a preterminal holds its tag and one word.
* `parse_trees(text, where)`: bracketed trees; unbalanced brackets are an error naming the file and line.
* `clean`: the usual preprocessing (Collins 1999): empty elements (-NONE-) removed with what they leave empty,
  function tags and indices stripped (NP-SBJ-1 -> NP), the treebank's unlabelled outer bracket dropped.
* `linearise`: the paper's target sequence, depth first, "(S (NP XX )NP (VP XX (NP XX XX )NP )VP XX )S": an opening
  token and a closing token per constituent, every part-of-speech tag normalised to XX.
* `delinearise`: the inverse for the decoder's output, with the repair the paper applies to malformed sequences:
  unmatched closings dropped, unclosed constituents closed, XXs added or removed to match the sentence's words.
* `evalb`: labelled bracketing precision, recall and F1 over a corpus, as EVALB with COLLINS.prm.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from zoo.data._base import BucketedData, LengthBuckets
from zoo.data.text import Vocabulary


@dataclass(frozen=True)
class Tree:
    label: str
    children: tuple  # of Tree, or one word (str) for a preterminal

    @property
    def is_preterminal(self) -> bool:
        return len(self.children) == 1 and isinstance(self.children[0], str)

    def words(self) -> list[str]:
        return [self.children[0]] if self.is_preterminal else [w for c in self.children for w in c.words()]

    def tags(self) -> list[str]:
        return [self.label] if self.is_preterminal else [t for c in self.children for t in c.tags()]

    def __str__(self) -> str:
        inner = self.children[0] if self.is_preterminal else " ".join(str(c) for c in self.children)
        return f"({self.label} {inner})"


_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def parse_trees(text: str, where: str | os.PathLike = "<text>") -> list[Tree]:
    """Every bracketed tree in `text` ("(S (NP (DT the) (NN cat)) ...)"), outer brackets with no label kept as label
    ""; an unbalanced bracket is a ValueError naming `where` and the line."""
    trees: list[Tree] = []
    stack: list[tuple[str, list, int]] = []
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_of(pos: int) -> int:
        lo, hi = 0, len(line_starts)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if line_starts[mid] <= pos else (lo, mid)
        return lo + 1

    tokens = list(_TOKEN.finditer(text))
    i = 0
    while i < len(tokens):
        tok = tokens[i].group()
        if tok == "(":
            label = ""
            if i + 1 < len(tokens) and tokens[i + 1].group() not in "()":
                label, i = tokens[i + 1].group(), i + 1
            stack.append((label, [], tokens[i].start()))
        elif tok == ")":
            if not stack:
                raise ValueError(f"{where}:{line_of(tokens[i].start())}: unbalanced brackets: ')' closes nothing")
            label, kids, _ = stack.pop()
            words = [k for k in kids if isinstance(k, str)]
            if words and len(kids) > 1:
                raise ValueError(f"{where}:{line_of(tokens[i].start())}: ({label} ...) mixes words and constituents")
            node = Tree(label, tuple(kids))
            if stack:
                stack[-1][1].append(node)
            else:
                trees.append(node)
        else:
            if not stack:
                raise ValueError(f"{where}:{line_of(tokens[i].start())}: {tok!r} outside any bracket")
            stack[-1][1].append(tok)
        i += 1
    if stack:
        raise ValueError(f"{where}:{line_of(stack[0][2])}: unbalanced brackets: the tree opened here is not closed")
    return trees


def _bare(label: str) -> str:
    if label.startswith("-") and label.endswith("-"):     # -NONE-, -LRB-, -RRB-
        return label
    return re.split(r"[-=]", label)[0] or label


def clean(tree: Tree) -> Tree | None:
    """`tree` without empty elements (and constituents they leave empty), function tags or the treebank's unlabelled
    outer bracket; None if nothing is left."""
    if tree.is_preterminal:
        return None if tree.label == "-NONE-" else tree
    kids = tuple(k for k in (clean(c) for c in tree.children) if k is not None)
    if not kids:
        return None
    if tree.label == "" and len(kids) == 1:
        return kids[0]
    return Tree(_bare(tree.label), kids)


def linearise(tree: Tree, pos: str | None = "XX") -> list[str]:
    """The paper's target tokens: "(LABEL" ... ")LABEL" per constituent, each preterminal as `pos` (its own tag when
    `pos` is None)."""
    if tree.is_preterminal:
        return [pos or tree.label]
    return [f"({tree.label}", *(t for c in tree.children for t in linearise(c, pos)), f"){tree.label}"]


def is_well_formed(tokens: list[str], n_words: int) -> bool:
    """Whether the tokens are one balanced tree whose closings match their openings, with one tag per word."""
    stack = []
    for i, t in enumerate(tokens):
        if t.startswith("("):
            stack.append(t[1:])
        elif t.startswith(")"):
            if not stack or stack.pop() != t[1:]:
                return False
            if not stack and i != len(tokens) - 1:
                return False
    return not stack and bool(tokens) and sum(t[0] not in "()" for t in tokens) == n_words


def delinearise(tokens: list[str], words: list[str], tags: list[str] | None = None) -> Tree:
    """The tree of a (possibly malformed) target sequence over `words`, repaired as the paper does: a closing with
    nothing open is dropped (any closing closes the innermost open constituent), tags beyond the words are dropped,
    words left over are attached as XX under the innermost open constituent, and what is still open is closed.
    Several top-level constituents are kept under an unlabelled root (which scoring ignores). `tags` (one per word)
    replace the XXs, for scoring with the gold parts of speech."""
    root: list = []
    stack: list[tuple[str, list]] = []
    w = 0

    def attach(node) -> None:
        (stack[-1][1] if stack else root).append(node)

    def leaf() -> Tree:
        nonlocal w
        node = Tree(tags[w] if tags else "XX", (words[w],))
        w += 1
        return node

    for t in tokens:
        if t.startswith("(") and len(t) > 1:
            stack.append((t[1:], []))
        elif t.startswith(")"):
            if stack:
                label, kids = stack.pop()
                if kids:
                    attach(Tree(label, tuple(kids)))
        elif w < len(words):
            attach(leaf())
    while w < len(words):
        attach(leaf())
    while stack:
        label, kids = stack.pop()
        if kids:
            attach(Tree(label, tuple(kids)))
    return root[0] if len(root) == 1 else Tree("", tuple(root))


# ------------------------------------------------------------------------------------------------ EVALB
#: COLLINS.prm: labels never counted as brackets (TOP and the empty root included); words under the punctuation tags
#: are deleted from both trees before spans are counted; ADVP and PRT are the same label
DELETE_LABELS = frozenset({"TOP", "", "-NONE-", ",", ":", "``", "''", "."})
PUNCTUATION = frozenset({",", ":", "``", "''", ".", "-NONE-"})
EQUAL_LABELS = {"PRT": "ADVP"}


def brackets(tree: Tree, keep: list[bool]) -> Counter:
    """The labelled brackets (label, start, end) of `tree`'s constituents, preterminals excluded, spans counted over
    the kept words only; constituents with no kept word, and deleted labels, are not brackets. A multiset: a unary
    chain with one label twice counts twice, as in EVALB."""
    out: Counter = Counter()
    kept = [0]                                  # kept words before each position
    for k in keep:
        kept.append(kept[-1] + k)

    def walk(node: Tree, start: int) -> int:
        if node.is_preterminal:
            return start + 1
        end = start
        for c in node.children:
            end = walk(c, end)
        lo, hi = kept[start], kept[end]
        if hi > lo and node.label not in DELETE_LABELS:
            out[(EQUAL_LABELS.get(node.label, node.label), lo, hi)] += 1
        return end

    walk(tree, 0)
    return out


def evalb(gold: list[Tree], test: list[Tree]) -> dict[str, float]:
    """Labelled bracketing over a corpus, as EVALB with COLLINS.prm: words whose GOLD tag is punctuation are deleted
    from both trees, brackets are matched as multisets per sentence, and precision, recall and F1 come from the sums
    over all sentences (EVALB's summary). Also: the share of sentences whose brackets match exactly."""
    matched = n_gold = n_test = exact = 0
    for g, t in zip(gold, test, strict=True):
        if len(g.words()) != len(t.words()):
            raise ValueError(f"gold and test trees cover {len(g.words())} and {len(t.words())} words: "
                             f"{' '.join(g.words())!r}")
        keep = [tag not in PUNCTUATION for tag in g.tags()]
        bg, bt = brackets(g, keep), brackets(t, keep)
        m = sum((bg & bt).values())
        matched, n_gold, n_test = matched + m, n_gold + sum(bg.values()), n_test + sum(bt.values())
        exact += bg == bt
    p = matched / n_test if n_test else 0.0
    r = matched / n_gold if n_gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "exact": exact / max(1, len(gold)), "matched": matched, "gold": n_gold, "test": n_test}


# ------------------------------------------------------------------------------------------------ treebanks
#: the standard WSJ split: sections 02-21 train, 22 development, 23 test
WSJ_SPLIT = {"train": range(2, 22), "validation": (22,), "test": (23,)}


def read_mrg(path: str | os.PathLike) -> list[Tree]:
    """One `.mrg` file's trees, cleaned; errors name the file and line."""
    path = Path(path)
    trees = [clean(t) for t in parse_trees(path.read_text(encoding="utf-8", errors="replace"), path)]
    return [t for t in trees if t is not None]


def wsj_files(root: str | os.PathLike, split: str) -> list[Path]:
    """The `.mrg` files of a WSJ split under `root` (the treebank's `wsj` folder, or a folder holding it), sections
    as two-digit folders."""
    root = Path(root)
    base = root / "wsj" if (root / "wsj").is_dir() else root
    files = [f for s in WSJ_SPLIT[split] for f in sorted((base / f"{s:02d}").glob("*.mrg"))]
    if not files:
        raise FileNotFoundError(f"{base}: no .mrg files in the {split} sections "
                                f"{', '.join(f'{s:02d}' for s in WSJ_SPLIT[split])}: point data_dir at the Penn "
                                "Treebank's parsed/mrg/wsj folder (LDC99T42)")
    return files


# ------------------------------------------------------------------------------------------------ the synthetic set
#: Brown-corpus tags -> Penn Treebank tags, for the lexicon of the synthetic grammar
BROWN_TO_PTB = {"at": "DT", "nn": "NN", "nns": "NNS", "np": "NNP", "jj": "JJ", "vbd": "VBD", "vb": "VB",
                "in": "IN", "rb": "RB", "md": "MD", "cc": "CC", "pps": "PRP", "ppss": "PRP", "cs": "IN_SUB"}

#: the grammar: label -> [(weight, right-hand side)]; right-hand sides name constituents or tags. The first rule of
#: each label is its shortest, used once a tree is deep (so that sentences end)
GRAMMAR: dict[str, list[tuple[float, tuple[str, ...]]]] = {
    "TOP": [(0.65, ("NP", "VP", ".")), (0.15, ("PP", ",", "NP", "VP", ".")), (0.1, ("SBAR", ",", "NP", "VP", ".")),
            (0.1, ("S_", "CC", "S_", "."))],
    "S_": [(1.0, ("NP", "VP"))],
    "NP": [(0.3, ("DT", "NN")), (0.14, ("DT", "JJ", "NN")), (0.1, ("DT", "NNS")), (0.06, ("NNS",)), (0.1, ("NNP",)),
           (0.04, ("NNP", "NNP")), (0.1, ("PRP",)), (0.1, ("NP", "PP")), (0.03, ("JJ", "NNS")),
           (0.03, ("NP", "CC", "NP"))],
    "VP": [(0.1, ("VBD",)), (0.28, ("VBD", "NP")), (0.14, ("VBD", "NP", "PP")), (0.1, ("VBD", "PP")),
           (0.07, ("VBD", "SBAR")), (0.1, ("MD", "VP_B")), (0.08, ("VBD", "ADJP")), (0.05, ("VP", "CC", "VP")),
           (0.08, ("VBD", "ADVP"))],
    "VP_B": [(0.5, ("VB", "NP")), (0.3, ("VB",)), (0.2, ("VB", "PP"))],
    "PP": [(1.0, ("IN", "NP"))],
    "SBAR": [(1.0, ("IN_SUB", "S_"))],
    "ADJP": [(0.7, ("JJ",)), (0.3, ("RB", "JJ"))],
    "ADVP": [(1.0, ("RB",))],
}
_LABEL = {"S_": "S", "VP_B": "VP", "TOP": "S"}
_PUNCT = {".": ".", ",": ","}


def brown_lexicon(folder: str | os.PathLike, per_tag: int = 400) -> dict[str, list[tuple[str, int]]]:
    """The most frequent lower-cased words of each tag the grammar uses, with their counts, read from the Brown
    corpus's `word/tag` files (title words, hyphenated tags and words with other characters left out)."""
    counts: dict[str, Counter] = {t: Counter() for t in set(BROWN_TO_PTB.values())}
    for p in sorted(Path(folder).glob("c[a-r][0-9][0-9]")):
        for tok in p.read_text(encoding="utf-8", errors="replace").split():
            word, _, tag = tok.rpartition("/")
            ptb = BROWN_TO_PTB.get(tag)
            if ptb and re.fullmatch(r"[A-Za-z]+", word):
                counts[ptb][word if ptb == "NNP" else word.lower()] += 1
    return {t: c.most_common(per_tag) for t, c in counts.items()}


def _cdf(lexicon: dict[str, list[tuple[str, int]]]) -> dict[str, torch.Tensor]:
    return {t: torch.tensor([c for _, c in ws], dtype=torch.float).cumsum(0) for t, ws in lexicon.items()}


def generate_tree(lexicon: dict[str, list[tuple[str, int]]], g: torch.Generator, max_depth: int = 6,
                  cdf: dict[str, torch.Tensor] | None = None) -> Tree:
    """One sentence's tree from GRAMMAR, words drawn by their Brown frequency (IN_SUB words are tagged IN)."""
    cdf = cdf or _cdf(lexicon)

    def word(tag: str) -> Tree:
        if tag in _PUNCT:
            return Tree(tag, (_PUNCT[tag],))
        c = cdf[tag]
        i = int(torch.searchsorted(c, torch.rand(1, generator=g) * c[-1]).clamp(max=len(c) - 1))
        return Tree("IN" if tag == "IN_SUB" else tag, (lexicon[tag][i][0],))

    def expand(label: str, depth: int) -> Tree:
        rules = GRAMMAR[label]
        if depth >= max_depth:
            rhs = rules[0][1]
        else:
            w = torch.tensor([p for p, _ in rules])
            rhs = rules[int(torch.multinomial(w, 1, generator=g))][1]
        kids = tuple(expand(s, depth + 1) if s in GRAMMAR else word(s) for s in rhs)
        return Tree(_LABEL.get(label, label), kids)

    return expand("TOP", 0)


def write_synthetic_treebank(out: str | os.PathLike, lexicon: dict[str, list[tuple[str, int]]],
                             sizes: tuple[int, int, int] = (20000, 1000, 1000), seed: int = 0) -> Path:
    """train.mrg, validation.mrg and test.mrg of generated trees (one per line, Penn Treebank brackets) under `out`;
    test sentences that also occur in training are redrawn, so the test set measures parsing, not recall."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    seen: set[str] = set()
    cdf = _cdf(lexicon)
    for split, n in zip(("train", "validation", "test"), sizes):
        lines: list[str] = []
        while len(lines) < n:
            t = generate_tree(lexicon, g, cdf=cdf)
            key = " ".join(t.words())
            if split != "train" and key in seen:
                continue
            seen.add(key)
            lines.append(f"( {t})")
        (out / f"{split}.mrg").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


# ------------------------------------------------------------------------------------------------ the data module
#: the Penn Treebank's constituent labels (after function tags are stripped): the default output labels
PTB_LABELS = ("ADJP", "ADVP", "CONJP", "FRAG", "INTJ", "LST", "NAC", "NP", "NX", "PP", "PRN", "PRT", "QP", "RRC", "S",
              "SBAR", "SBARQ", "SINV", "SQ", "UCP", "VP", "WHADJP", "WHADVP", "WHNP", "WHPP", "X")


def target_tokens(labels: tuple[str, ...] | list[str]) -> list[str]:
    """The decoder's vocabulary: padding, end, XX, then an opening and a closing token per label."""
    return ["<pad>", "<eos>", "XX", *(f"({lb}" for lb in labels), *(f"){lb}" for lb in labels)]


class Sentence(NamedTuple):
    source: torch.Tensor      # [S] word ids, in reading order
    target: torch.Tensor      # [T] linearised tree ids, ending with <eos>
    punct: torch.Tensor       # [S] bool: the word's gold tag is punctuation (deleted in scoring)


def collate(items: list[Sentence]) -> tuple[torch.Tensor, ...]:
    """(source [B, S], source lengths, target [B, T] padded with 0, target lengths, punct [B, S])."""
    pad = torch.nn.utils.rnn.pad_sequence
    return (pad([s.source for s in items], batch_first=True), torch.tensor([len(s.source) for s in items]),
            pad([s.target for s in items], batch_first=True), torch.tensor([len(s.target) for s in items]),
            pad([s.punct for s in items], batch_first=True))


class TreebankDataModule(BucketedData):
    """Sentences and their linearised trees for a sequence-to-sequence parser.

    Args:
        dataset: "synthetic" (the generated treebank of this module: written on first use under
            `$ZOO_HOME/data/synthetic-treebank/seed<seed>-<sizes>`, from the Brown corpus's words) or "wsj" (the
            Penn Treebank's WSJ `.mrg` files with the standard split; licensed, LDC99T42: point data_dir at them).
        data_dir: where the treebank is (wsj), or where to write/read the synthetic one.
        labels: the constituent labels the model predicts (its output vocabulary); a tree with another label is an
            error naming it.
        vocab: a released source vocabulary (vocabulary.json) to encode words with; default: built from training.
        min_count: training words seen fewer times become <unk>.
        sizes: the synthetic treebank's train/validation/test sentences (default 20,000, 1,000, 1,000).
        batch_size, eval_batch_size: sentences per batch, grouped by length (shuffled groups in training).
    """

    def __init__(self, dataset: str = "synthetic", data_dir: str | None = None,
                 labels: list[str] | None = None, vocab: str | None = None, min_count: int = 1,
                 sizes: list[int] | None = None, batch_size: int = 64, eval_batch_size: int = 128,
                 seed: int = 0):
        super().__init__()
        if dataset not in ("synthetic", "wsj"):
            raise ValueError(f"dataset must be 'synthetic' or 'wsj', got {dataset!r}")
        self.dataset, self.data_dir, self.vocab_path, self.min_count = dataset, data_dir, vocab, min_count
        self.labels = tuple(labels or PTB_LABELS)
        self.sizes = list(sizes or [20000, 1000, 1000])
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.vocab: Vocabulary | None = None
        self.trees: dict[str, list[Tree]] = {}
        self.items: dict[str, list[Sentence]] = {}

    def _synthetic_dir(self) -> Path:
        from zoo._paths import zoo_home

        if self.data_dir:
            return Path(self.data_dir)
        return zoo_home() / "data" / "synthetic-treebank" / f"seed{self.seed}-{'-'.join(map(str, self.sizes))}"

    def prepare_data(self) -> None:
        if self.dataset == "wsj":
            if not self.data_dir:
                raise FileNotFoundError("the WSJ treebank is licensed (LDC99T42): pass --data.init_args.data_dir=DIR, "
                                        "the folder of its parsed/mrg/wsj sections")
            wsj_files(self.data_dir, "test")
            return
        folder = self._synthetic_dir()
        if not all((folder / f"{s}.mrg").is_file() for s in ("train", "validation", "test")):
            from zoo.data.text import TextDataModule

            write_synthetic_treebank(folder, brown_lexicon(TextDataModule("brown").locate()), tuple(self.sizes),
                                     self.seed)

    def read(self) -> dict[str, list[Tree]]:
        if self.dataset == "wsj":
            return {s: [t for f in wsj_files(self.data_dir, s) for t in read_mrg(f)]
                    for s in ("train", "validation", "test")}
        folder = self._synthetic_dir()
        return {s: read_mrg(folder / f"{s}.mrg") for s in ("train", "validation", "test")}

    def setup(self, stage: str | None = None) -> None:
        if self.items:
            return
        self.prepare_data()
        self.trees = self.read()
        for k, trees in self.trees.items():
            if not trees:
                raise ValueError(f"the {k} split of the {self.dataset} treebank holds no trees")
        if self.vocab_path:
            self.vocab = Vocabulary.load(self.vocab_path)
        else:
            self.vocab = Vocabulary.build((" ".join(t.words()) for t in self.trees["train"]), "word", "whitespace",
                                          min_count=self.min_count, source=f"{self.dataset} treebank (train split)")
        index = {t: i for i, t in enumerate(target_tokens(self.labels))}
        for k, trees in self.trees.items():
            out = []
            for n, t in enumerate(trees):
                toks = linearise(t)
                bad = [x[1:] for x in toks if x[0] in "()" and x not in index]
                if bad:
                    raise ValueError(f"{self.dataset} {k} tree {n + 1} has label(s) {sorted(set(bad))} outside the "
                                     f"model's labels: pass --data.init_args.labels=[...] and the same to the model")
                out.append(Sentence(self.vocab.encode([" ".join(t.words())])[:-1],
                                    torch.tensor([index[x] for x in toks] + [1]),
                                    torch.tensor([tag in PUNCTUATION for tag in t.tags()])))
            self.items[k] = out

    @property
    def vocab_size(self) -> int:
        self.setup()
        return len(self.vocab)

    def save_vocabulary(self, path: str | os.PathLike) -> None:
        self.setup()
        self.vocab.save(path)

    def buckets(self, split, batch_size, shuffle, world, rank, epoch) -> LengthBuckets:
        return LengthBuckets(self.items[split], batch_size, shuffle, self.seed, world, rank, epoch,
                             key=lambda s: len(s.source), collate=collate, what="sentences")
