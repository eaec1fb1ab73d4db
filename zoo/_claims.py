"""The claims ledger: each implemented paper's testable claims, and verdicts computed from measured metrics.

The ledger is the `claims:` section of checkpoints.yaml, keyed by arXiv id. A claim either carries a `check`, an
expression over measured metrics that may span entries, or `not_testable` with the reason. Verdicts are never
stored by hand: `verdict()` computes `holds` or `fails` from the metrics that `zoo reproduce` measured, or
`not measured` while a metric it names has no value yet.

Check grammar: operands are `ENTRY:METRIC` references (`capsnet-fmnist:test/acc`) and numbers; `+ - * /`,
unary minus, `abs(...)`, parentheses, comparisons `< <= > >=` (chains allowed), `and`, `or`. It is parsed with
`ast` and walked node by node; nothing is passed to `eval`.

Pure Python (yaml only), like `_catalog`: `zoo list` and README generation read it without torch.
"""
from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from zoo._errors import CatalogError

REF = re.compile(r"(?<![A-Za-z0-9_./:])([a-z0-9]+(?:-[a-z0-9]+)*):([A-Za-z0-9_./]+)")
ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
ARXIV = re.compile(r"^\d{4}\.\d{4,5}$")
HOLDS, FAILS, NOT_TESTABLE, NOT_MEASURED = "holds", "fails", "not testable here", "not measured"
_FIELDS = ("id", "claim", "where", "reported", "setting", "source", "check", "margin", "if_fails", "not_testable")
_REQUIRED = ("id", "claim", "where")

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}


@dataclass(frozen=True)
class Claim:
    """One claim of one paper; field meanings in the module docstring and checkpoints.yaml's header."""

    paper: str
    id: str
    claim: str
    where: str
    reported: str | None = None
    setting: str | None = None
    source: str | None = None
    check: str | None = None
    margin: str | None = None
    if_fails: str | None = None
    not_testable: str | None = None

    def refs(self) -> list[tuple[str, str]]:
        """The (entry, metric) pairs the check reads, in order of first appearance."""
        return list(dict.fromkeys(REF.findall(self.check or "")))

    def entries(self) -> list[str]:
        return list(dict.fromkeys(e for e, _ in self.refs()))


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    status: str
    values: dict[str, float]
    reason: str = ""

    @property
    def ours(self) -> str:
        """The measured values the check read, as `entry:metric = value`."""
        return "; ".join(f"{ref} = {_num(v)}" for ref, v in self.values.items()) or "–"


def _num(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"


def _compile(expr: str) -> tuple[ast.Expression, list[tuple[str, str]]]:
    """Parse a check: references become names `_r0, _r1, ...`; any construct outside the grammar is an error."""
    refs = list(dict.fromkeys(REF.findall(expr)))
    index = {ref: i for i, ref in enumerate(refs)}
    text = REF.sub(lambda m: f"_r{index[(m[1], m[2])]}", expr)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"check {expr!r} does not parse: {err.msg}") from None
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.BinOp, ast.UnaryOp,
                               ast.USub, ast.Load, *_BIN, *_CMP))
        ok |= isinstance(node, ast.Constant) and type(node.value) in (int, float)
        ok |= isinstance(node, ast.Name) and (re.fullmatch(r"_r\d+", node.id) is not None or node.id == "abs")
        ok |= isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "abs" \
            and len(node.args) == 1 and not node.keywords
        if not ok:
            raise ValueError(f"check {expr!r}: {type(node).__name__} is outside the check grammar "
                             "(ENTRY:METRIC, numbers, + - * /, abs(), < <= > >=, and, or)")
    if not isinstance(tree.body, (ast.Compare, ast.BoolOp)):
        raise ValueError(f"check {expr!r} must be a comparison (e.g. A:m > B:m - 0.01)")
    return tree, refs


def _walk(node: ast.AST, env: Mapping[str, float]) -> Any:
    if isinstance(node, ast.Expression):
        return _walk(node.body, env)
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        return -_walk(node.operand, env)
    if isinstance(node, ast.BinOp):
        return _BIN[type(node.op)](_walk(node.left, env), _walk(node.right, env))
    if isinstance(node, ast.Call):
        return abs(_walk(node.args[0], env))
    if isinstance(node, ast.BoolOp):
        values = (_walk(v, env) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    left = _walk(node.left, env)
    for op, right_node in zip(node.ops, node.comparators):
        right = _walk(right_node, env)
        if not _CMP[type(op)](left, right):
            return False
        left = right
    return True


def parse_claims(raw: Any, entries: Mapping[str, Any]) -> dict[str, list[Claim]]:
    """Validate the `claims:` section against the schema and the catalogue's entry names."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CatalogError("checkpoints.yaml: `claims` must map arXiv ids to lists of claims")
    out: dict[str, list[Claim]] = {}
    seen: set[str] = set()
    for paper, items in raw.items():
        paper = str(paper)
        where = f"checkpoints.yaml, claims of {paper}"
        if not ARXIV.match(paper):
            raise CatalogError(f"{where}: keys are arXiv ids such as '2212.13345'")
        if not isinstance(items, list) or not items:
            raise CatalogError(f"{where}: must be a non-empty list of claims")
        out[paper] = []
        for item in items:
            if not isinstance(item, dict):
                raise CatalogError(f"{where}: each claim is a mapping")
            cid = item.get("id", "?")
            unknown = set(item) - set(_FIELDS)
            if unknown:
                hint = " Verdicts are computed by `zoo reproduce`, never written." if unknown & {
                    "verdict", "status", "holds", "result"} else ""
                raise CatalogError(f"{where}, {cid!r}: unknown field(s) {sorted(unknown)}.{hint}")
            missing = [k for k in _REQUIRED if not item.get(k)]
            if missing:
                raise CatalogError(f"{where}, {cid!r}: missing {missing}")
            if not ID.match(str(cid)) or cid in seen:
                raise CatalogError(f"{where}: claim ids are kebab case and unique; {cid!r} is not")
            seen.add(cid)
            if bool(item.get("check")) == bool(item.get("not_testable")):
                raise CatalogError(f"{where}, {cid!r}: give exactly one of `check` or `not_testable` (the reason)")
            claim = Claim(paper=paper, **{k: (str(item[k]) if item.get(k) is not None else None) for k in _FIELDS})
            if claim.check:
                try:
                    _compile(claim.check)
                except ValueError as err:
                    raise CatalogError(f"{where}, {cid!r}: {err}") from None
                unknown_entries = [e for e in claim.entries() if e not in entries]
                if unknown_entries:
                    raise CatalogError(f"{where}, {cid!r}: the check names {unknown_entries}, not in the catalogue")
            out[paper].append(claim)
    return out


def verdict(claim: Claim, metrics: Callable[[str], Mapping[str, float]] | Mapping[str, Mapping[str, float]]) -> Verdict:
    """Evaluate a claim's check on measured metrics (`metrics(entry)` or `metrics[entry]` -> {metric: value})."""
    if claim.not_testable:
        return Verdict(claim, NOT_TESTABLE, {}, claim.not_testable)
    get = metrics if callable(metrics) else (lambda e: metrics.get(e, {}))
    tree, refs = _compile(claim.check or "")
    values: dict[str, float] = {}
    missing = []
    for entry, metric in refs:
        v = get(entry).get(metric)
        if v is None:
            missing.append(f"{entry}:{metric}")
        else:
            values[f"{entry}:{metric}"] = float(v)
    if missing:
        return Verdict(claim, NOT_MEASURED, values, f"not measured yet: {', '.join(missing)}")
    env = {f"_r{i}": values[f"{e}:{m}"] for i, (e, m) in enumerate(refs)}
    holds = bool(_walk(tree, env))
    return Verdict(claim, HOLDS if holds else FAILS, values, "" if holds else (claim.if_fails or ""))


def summary(verdicts: list[Verdict]) -> str:
    """'2 of 4 hold, 1 fails, 1 not testable here' for README's paper table."""
    count = {s: sum(v.status == s for v in verdicts) for s in (HOLDS, FAILS, NOT_TESTABLE, NOT_MEASURED)}
    testable = count[HOLDS] + count[FAILS]
    parts = [f"{count[HOLDS]} of {testable} hold" if testable else "none measured"]
    fail_word = FAILS if count[FAILS] == 1 else "fail"
    parts += [f"{n} {s}" for s, n in ((fail_word, count[FAILS]), (NOT_TESTABLE, count[NOT_TESTABLE]),
                                      (NOT_MEASURED, count[NOT_MEASURED])) if n]
    return ", ".join(parts)


def _cell(text: str | None) -> str:
    return (text or "–").replace("|", "\\|").replace("\n", " ")


def markdown_table(verdicts: list[Verdict]) -> str:
    """The "Paper's claims" table of model cards: claim, the paper's number, ours, verdict (and why)."""
    rows = ["| claim | paper's number (its setting) | ours (measured) | verdict |", "|---|---|---|---|"]
    for v in verdicts:
        c = v.claim
        paper = c.reported + (f" ({c.setting})" if c.setting else "") if c.reported else "not quoted (unchecked)"
        status = f"**{v.status}**" + (f": {v.reason}" if v.reason else "")
        rows.append(f"| {_cell(c.claim)} ({_cell(c.where)}) | {_cell(paper)} | {_cell(v.ours)} | {_cell(status)} |")
    return "\n".join(rows)


def claims_json(verdicts: list[Verdict]) -> str:
    """A release's claims.json: each claim's id, paper, check, verdict, the values it read and the reason."""
    import json

    return json.dumps([{"id": v.claim.id, "paper": v.claim.paper, "check": v.claim.check, "verdict": v.status,
                        "values": v.values, "reason": v.reason} for v in verdicts], indent=2) + "\n"


def text_table(verdicts: list[Verdict]) -> str:
    """The same verdicts for a terminal: one line per claim, then the values it read."""
    lines = []
    for v in verdicts:
        lines.append(f"  {v.status:<17} {v.claim.id}: {v.claim.claim}")
        if v.values:
            lines.append(f"  {'':<17}   {v.ours}")
        if v.reason:
            lines.append(f"  {'':<17}   {v.reason}")
    return "\n".join(lines)
