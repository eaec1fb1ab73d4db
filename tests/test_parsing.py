"""Trees for parsing as translation (zoo.data.parsing): reading Penn Treebank brackets with errors that name the file
and line, the usual cleaning, the paper's linearisation and its inverse with repair, EVALB's labelled brackets
against rows of EVALB's own sample (sample.gld / sample.tst / sample.rsl) and COLLINS.prm's conventions, the
synthetic treebank and the data module."""
import pytest
import torch

from zoo.data.parsing import (TreebankDataModule, Tree, brackets, clean, delinearise, evalb, is_well_formed, linearise,
                              parse_trees, read_mrg, wsj_files, write_synthetic_treebank)

MRG = """( (S
    (NP-SBJ (NNP John) )
    (VP (VBZ has)
      (NP (DT a) (NN dog) ))
    (. .) ))
( (S (NP-SBJ-1 (-NONE- *) ) (VP (VB Go) ) (. !) ))
"""


def test_read_clean_and_linearise_a_treebank_file(tmp_path):
    (tmp_path / "wsj_0001.mrg").write_text(MRG)
    first, second = read_mrg(tmp_path / "wsj_0001.mrg")
    assert str(first) == "(S (NP (NNP John)) (VP (VBZ has) (NP (DT a) (NN dog))) (. .))"
    assert str(second) == "(S (VP (VB Go)) (. !))"          # the empty subject gone with its NP, tags stripped
    assert " ".join(linearise(first)) == "(S (NP XX )NP (VP XX (NP XX XX )NP )VP XX )S"   # the paper's Figure 2
    assert " ".join(linearise(first, pos=None)) == "(S (NP NNP )NP (VP VBZ (NP DT NN )NP )VP . )S"


@pytest.mark.parametrize("text,line,what", [
    ("(S (NP (DT a))\n(VP (VB go)))\n)", 3, "closes nothing"),
    ("(S (NP (DT a))\n\n(VP (VB go)", 1, "not closed"),
])
def test_unbalanced_brackets_name_the_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "bad.mrg"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"bad.mrg:{line}: .*{what}"):
        read_mrg(path)


def test_wsj_split_reads_the_standard_sections(tmp_path):
    for sec in ("02", "21", "22", "23", "24"):
        (tmp_path / "wsj" / sec).mkdir(parents=True)
        (tmp_path / "wsj" / sec / f"wsj_{sec}01.mrg").write_text(MRG)
    assert [f.parent.name for f in wsj_files(tmp_path, "train")] == ["02", "21"]
    assert [f.parent.name for f in wsj_files(tmp_path, "test")] == ["23"]
    with pytest.raises(FileNotFoundError, match="LDC99T42"):
        wsj_files(tmp_path / "wsj" / "02", "validation")


def test_delinearise_inverts_linearise_and_repairs_malformed_output():
    tree = parse_trees("(S (NP (DT the) (NN cat)) (VP (VBD sat) (PP (IN on) (NP (DT a) (NN mat)))) (. .))")[0]
    words, tags = tree.words(), tree.tags()
    tokens = linearise(tree)
    assert is_well_formed(tokens, len(words)) and delinearise(tokens, words, tags) == tree
    # a stray closing is dropped, the missing closings are added at the end
    broken = "(S (NP XX XX )NP )VP )S )S (VP XX (PP XX (NP XX XX".split()
    assert not is_well_formed(broken, 7)
    fixed = delinearise(broken, words, tags)
    assert fixed.words() == words and str(fixed).count("(") == str(fixed).count(")")
    # too few XX: the words left over join the innermost open constituent; too many: the extras are dropped
    assert delinearise("(S (NP XX )NP )S".split(), ["a", "b"]).words() == ["a", "b"]
    assert delinearise("(S XX XX XX )S".split(), ["a"]).words() == ["a"]


GOLD = "(S (A (P this)) (B (Q is) (A (R a) (T test))))"


@pytest.mark.parametrize("test,counts", [             # EVALB's sample: rows 2, 6, 7 and 9 of sample.rsl
    ("(S (A (P this)) (B (Q is) (C (R a) (T test))))", (3, 4, 4)),
    ("(S (A (P this) (Q is)) (A (R a) (T test)))", (2, 4, 3)),
    ("(S (P this) (Q is) (R a) (T test))", (1, 4, 1)),
    ("(S (A (P this)) (B (Q is) (A (A (R a) (T test)))))", (4, 4, 5)),
])
def test_labelled_brackets_match_evalbs_sample(test, counts):
    r = evalb(parse_trees(GOLD), parse_trees(test))
    assert (r["matched"], r["gold"], r["test"]) == counts


def test_collins_conventions_punctuation_top_and_equal_labels():
    gold = parse_trees("(TOP (S (NP (DT the) (NN dog)) (VP (VBD ran) (PRT (RP off))) (. .)))")[0]
    keep = [t != "." for t in gold.tags()]
    # TOP is not a bracket; the final period is deleted, so S spans the three words; PRT is ADVP
    assert brackets(gold, keep) == {("S", 0, 4): 1, ("NP", 0, 2): 1, ("VP", 2, 4): 1, ("ADVP", 3, 4): 1}
    test = parse_trees("(S (NP (DT the) (NN dog)) (VP (VBD ran) (ADVP (RB off) (. .))))")[0]
    r = evalb([gold], [test])  # the period inside VP does not change VP's span once deleted
    assert (r["matched"], r["gold"], r["test"], r["f1"]) == (4, 4, 4, 1.0)
    with pytest.raises(ValueError, match="cover 5 and 3 words"):
        evalb([gold], parse_trees("(S (NP (DT the) (NN dog)) (VP (VBD ran)))"))


def test_corpus_scores_sum_brackets_over_sentences():
    gold = parse_trees(GOLD) * 2
    test = parse_trees("(S (A (P this)) (B (Q is) (C (R a) (T test))))" + GOLD)
    r = evalb(gold, test)                                 # (3 + 4) of 8 both ways, one exact match in two
    assert r["precision"] == r["recall"] == 7 / 8 and r["exact"] == 0.5


def test_synthetic_treebank_and_data_module(tmp_path):
    lexicon = {t: [(f"{t.lower()}{i}", 10 - i) for i in range(5)]
               for t in ("DT", "NN", "NNS", "NNP", "JJ", "VBD", "VB", "IN", "RB", "MD", "CC", "PRP", "IN_SUB")}
    write_synthetic_treebank(tmp_path, lexicon, (30, 6, 6), seed=0)
    train = read_mrg(tmp_path / "train.mrg")
    test = read_mrg(tmp_path / "test.mrg")
    assert len(train) == 30 and not {" ".join(t.words()) for t in test} & {" ".join(t.words()) for t in train}
    assert all(t.label == "S" and t.words()[-1] == "." for t in train)
    assert {t for tree in train for t in tree.tags()} <= {"DT", "NN", "NNS", "NNP", "JJ", "VBD", "VB", "IN", "RB",
                                                          "MD", "CC", "PRP", ".", ","}
    dm = TreebankDataModule("synthetic", data_dir=str(tmp_path), batch_size=4, eval_batch_size=3)
    dm.setup("fit")
    src, n, tgt, tn, punct = next(iter(dm.val_dataloader()))
    assert src.shape[0] == 3 and (tgt.gather(1, (tn - 1)[:, None]) == 1).all()   # every target ends with <eos>
    assert punct[torch.arange(3), n - 1].all()                        # the final period: punctuation
    with pytest.raises(ValueError, match="outside the model's labels"):
        TreebankDataModule("synthetic", data_dir=str(tmp_path), labels=["NP", "VP"]).setup("fit")


def test_tree_words_and_tags():
    t = Tree("S", (Tree("NP", (Tree("PRP", ("it",)),)), Tree(".", (".",))))
    assert t.words() == ["it", "."] and t.tags() == ["PRP", "."] and clean(t) == t
