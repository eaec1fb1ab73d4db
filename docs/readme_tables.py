"""Regenerate README.md's generated tables (checkpoints, and papers with their claims held) from checkpoints.yaml
and docs/papers.yaml, so they never drift. `python docs/readme_tables.py --check` exits 1 when stale."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo._catalog import load_catalog, load_claims  # noqa: E402
from zoo._claims import summary, verdict  # noqa: E402


def _fmt(v: float) -> str:
    return f"{100 * v:.2f}%"


def checkpoints_table() -> str:
    entries = load_catalog(ROOT / "checkpoints.yaml")
    rows = ["| checkpoint | dataset | headline metric (measured) | its baseline (measured) | weights |",
            "|---|---|---|---|---|"]
    for name in sorted(entries):
        e = entries[name]
        if e.tags and "backprop-baseline" in e.tags:
            continue
        acc = e.headline()
        base = entries[e.baseline].headline() if e.baseline else ""
        get = f"Hub @{e.hub.revision[:7]}" if e.hub else f"`zoo {'convert' if e.source else 'reproduce'} {name}`"
        if e.source and e.source["framework"] == "pytorch" and not e.hub:  # a browser download first
            get = f"`zoo convert {name} --checkpoint FILE`"
        rows.append(
            f"| `{name}` | {e.dataset} | {acc or 'not yet measured'} | "
            f"{(base + ' `' + e.baseline + '`') if base else '–'} | "
            f"{get} |")
    return "\n".join(rows)


def papers_table() -> str:
    listed = yaml.safe_load((ROOT / "docs" / "papers.yaml").read_text())
    papers, companions = listed["papers"], listed.get("companions") or []
    entries = load_catalog(ROOT / "checkpoints.yaml")
    ledger = load_claims(ROOT / "checkpoints.yaml")
    by_arxiv: dict[str, list[str]] = {}
    for name, e in entries.items():
        for arxiv in (e.paper.arxiv, *e.paper.also):
            by_arxiv.setdefault(arxiv, []).append(name)
    rows = ["| # | paper | status | claims held (measured here) | checkpoints |", "|---|---|---|---|---|"]
    for p in papers:
        link = f"[{p['title']}](https://arxiv.org/abs/{p['arxiv']})" if p.get("arxiv") else f"{p['title']} ({p['venue']})"
        names = sorted(by_arxiv.get(p.get("arxiv", ""), []))
        if names and p["status"] == "partial":
            status = f"in progress (issue {p['issue']})"
        elif names:
            status = "implemented"
        elif p["status"] == "not-trainable":
            status = "not a trainable system"
        else:
            status = "planned" + (f" (issue {p['issue']})" if p.get("issue") else "")
        claims = ledger.get(p.get("arxiv", ""), []) + [c for q in companions if q["of"] == p["n"]
                                                        for c in ledger.get(q["arxiv"], [])]
        held = summary([verdict(c, lambda n: entries[n].metrics) for c in claims]) if claims else "–"
        rows.append(f"| {p['n']} | {link} | {status} | {held} | {', '.join(f'`{n}`' for n in names) or '–'} |")
    return "\n".join(rows)


def render(text: str) -> str:
    for key, table in (("checkpoints", checkpoints_table()), ("papers", papers_table())):
        text = re.sub(rf"(<!-- {key}:begin -->\n)(?:.*?\n)?(<!-- {key}:end -->)",
                      lambda m: m[1] + table + "\n" + m[2], text, flags=re.S)
    return text


def main(argv: list[str]) -> int:
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = render(old)
    if "--check" in argv:
        if new != old:
            print("README.md tables are stale: run python docs/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
