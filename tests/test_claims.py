"""The claims ledger: the check grammar against hand-evaluated values, the schema's refusals, the real ledger's
coverage of every implemented paper, and the verdicts that reach model cards and releases."""
import json

import pytest
import yaml
from conftest import REPO

import zoo
from zoo import _catalog
from zoo._claims import FAILS, HOLDS, NOT_MEASURED, NOT_TESTABLE, Claim, parse_claims, summary, verdict
from zoo._errors import CatalogError

ENTRIES = _catalog.load_catalog()
LEDGER = _catalog.load_claims()
M = {"a-x": {"test/acc": 0.9, "fid": 30.0}, "b-y": {"test/acc": 0.85, "fid": 20.0}}


def check(expr: str) -> Claim:
    return Claim(paper="0000.00000", id="c", claim="c", where="§1", check=expr)


@pytest.mark.parametrize("expr, status", [
    ("a-x:test/acc > b-y:test/acc", HOLDS),
    ("a-x:test/acc >= b-y:test/acc + 0.06", FAILS),              # 0.9 < 0.91
    ("a-x:test/acc >= b-y:test/acc + 0.05", HOLDS),              # 0.9 >= 0.9 (float: 0.85 + 0.05 == 0.9)
    ("a-x:fid < b-y:fid", FAILS),
    ("a-x:fid / b-y:fid < 1.6 and a-x:fid - b-y:fid > 9", HOLDS),  # 1.5, 10
    ("abs(a-x:test/acc - b-y:test/acc) <= 0.01 or a-x:fid > 25", HOLDS),
    ("abs(a-x:test/acc - b-y:test/acc) <= 0.01", FAILS),
    ("0.8 < b-y:test/acc < a-x:test/acc < 0.95", HOLDS),          # a chain
    ("0.8 < b-y:test/acc < 0.84", FAILS),
    ("-a-x:fid < -b-y:fid", HOLDS),
])
def test_checks_evaluate_to_hand_derived_verdicts(expr, status):
    v = verdict(check(expr), M)
    assert v.status == status
    assert set(v.values) <= {"a-x:test/acc", "a-x:fid", "b-y:test/acc", "b-y:fid"} and v.values


def test_a_metric_not_yet_measured_gives_no_verdict():
    v = verdict(check("a-x:test/acc > c-z:test/acc"), M)
    assert v.status == NOT_MEASURED and "c-z:test/acc" in v.reason


def test_not_testable_claims_carry_their_reason():
    c = Claim(paper="0000.00000", id="c", claim="c", where="§1", not_testable="needs ImageNet")
    v = verdict(c, M)
    assert (v.status, v.reason) == (NOT_TESTABLE, "needs ImageNet")


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true') > 0",
    "a-x:test/acc > (1).real",
    "a-x:test/acc > max(1, 2)",
    "a-x:test/acc ** 2 > 0",
    "a-x:test/acc == 0.9",
    "a-x:test/acc + 1",                      # not a comparison
    "a-x:test/acc > ",
])
def test_anything_outside_the_grammar_is_refused(expr):
    raw = {"0000.00000": [{"id": "c", "claim": "c", "where": "§1", "check": expr}]}
    with pytest.raises(CatalogError, match="check"):
        parse_claims(raw, {"a-x": None})


@pytest.mark.parametrize("item, message", [
    ({"verdict": "holds", "check": "a-x:m > 0"}, "never written"),
    ({"check": "a-x:m > 0", "not_testable": "no data"}, "exactly one"),
    ({}, "exactly one"),
    ({"check": "nope-entry:m > 0"}, "not in the catalogue"),
])
def test_schema_refuses_typed_verdicts_and_incomplete_claims(item, message):
    raw = {"0000.00000": [{"id": "c", "claim": "c", "where": "§1", **item}]}
    with pytest.raises(CatalogError, match=message):
        parse_claims(raw, {"a-x": None})


def test_paper_numbers_under_our_metric_names_are_refused():
    raw = yaml.safe_load((REPO / "checkpoints.yaml").read_text())["checkpoints"]["forward-forward-digits"]
    raw["paper"]["reported"] = {"test/acc": 0.9864}
    with pytest.raises(CatalogError, match="claims ledger"):
        _catalog.parse_entry("forward-forward-digits", raw)


def test_claim_ids_are_unique():
    item = {"id": "c", "claim": "c", "where": "§1", "not_testable": "x"}
    with pytest.raises(CatalogError, match="unique"):
        parse_claims({"0000.00000": [item], "0000.00001": [item]}, {})


def test_summary_counts_each_verdict():
    vs = [verdict(check(e), M) for e in ("a-x:fid > 0", "a-x:fid < 0", "a-x:zzz > 0")]
    vs.append(verdict(Claim(paper="p", id="d", claim="d", where="w", not_testable="x"), M))
    assert summary(vs) == "1 of 2 hold, 1 fails, 1 not testable here, 1 not measured"


# ----------------------------------------------------------------------------------------------- the real ledger
def test_every_implemented_paper_has_claims_and_every_claimed_paper_is_implemented():
    implemented = {a for e in ENTRIES.values() for a in (e.paper.arxiv, *e.paper.also)}
    assert implemented - set(LEDGER) == set(), "a paper with entries but no claims in the ledger"
    assert set(LEDGER) - implemented == set(), "claims of a paper that no entry implements"


@pytest.mark.parametrize("paper", sorted(LEDGER))
def test_every_check_names_metrics_its_entries_measure(paper):
    for c in LEDGER[paper]:
        for entry, metric in c.refs():
            assert metric in ENTRIES[entry].metrics, f"{c.id}: {entry} does not measure {metric}"
        if c.check:
            assert verdict(c, lambda n: ENTRIES[n].metrics).status in (HOLDS, FAILS)
        for text in (c.reported, c.claim, c.setting):
            assert "unverified" not in (text or "").lower(), f"{c.id}: an unverified number is quoted"


def test_each_paper_has_a_claim_with_a_check_and_verdicts_are_nowhere_typed():
    for paper, claims in LEDGER.items():
        assert any(c.check for c in claims), f"{paper}: no claim is checked against our measurements"
    raw = yaml.safe_load((REPO / "checkpoints.yaml").read_text())["claims"]
    typed = [c.get("id") for cs in raw.values() for c in cs if {"verdict", "status", "holds"} & set(c)]
    assert not typed


def test_release_card_shows_claims_table_and_claims_json(tmp_path):
    name = "forward-forward-digits"
    e = ENTRIES[name]
    model = zoo.create(e.model, **e.init_args)
    folder = zoo.save_pretrained(model, tmp_path / "rel", metrics=e.metrics, name=name)
    card = (folder / "README.md").read_text()
    saved = json.loads((folder / "claims.json").read_text())
    expected = _catalog.verdicts_of(e)
    assert [c["id"] for c in saved] == [v.claim.id for v in expected]
    assert [c["verdict"] for c in saved] == [v.status for v in expected]
    assert "## Paper's claims" in card
    for v in expected:
        assert f"**{v.status}**" in card
    front = yaml.safe_load(card.split("---")[1])
    results = front["model-index"][0]["results"]
    logged = {m["name"] for r in results for m in r["metrics"]}
    assert logged == set(e.metrics), "model-index holds our measurements only, never the paper's numbers"


def test_zoo_claims_prints_verdicts_by_paper_or_entry(capsys):
    from zoo.cli import main

    assert main(["claims", "1503.02531"]) == 0
    by_paper = capsys.readouterr().out
    verdicts = [verdict(c, lambda n: ENTRIES[n].metrics) for c in LEDGER["1503.02531"]]
    assert by_paper.startswith(f"Distilling the Knowledge in a Neural Network (arXiv 1503.02531): {summary(verdicts)}")
    assert all(v.claim.id in by_paper for v in verdicts)
    assert main(["claims", "kd-fmnist-student"]) == 0 and capsys.readouterr().out == by_paper
    assert main(["claims", "kd-fmnist-studnet"]) == 2
    assert "kd-fmnist-student" in capsys.readouterr().err
