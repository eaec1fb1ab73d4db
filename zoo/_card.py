"""Model cards (huggingface_hub.ModelCard) with `model-index` results from measured metrics."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from zoo._catalog import Entry
from zoo._claims import markdown_table

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ description }}

{% if paper %}Paper: [{{ paper.title }}]({{ paper.url }}) (arXiv {{ paper.arxiv }}).
The paper's setting: {{ paper.setting }}. Its numbers appear with their settings in "Paper's claims" below.
{% if paper.also %}This checkpoint also runs the experiments of {% for a in paper.also %}[arXiv {{ a }}](https://arxiv.org/abs/{{ a }}){{ ", " if not loop.last }}{% endfor %}.
{% endif %}{% endif %}
{% if provenance %}## Converted weights

These are the official weights, converted by `zoo convert {{ name }}` from `{{ provenance.source }}`
(checkpoint `{{ provenance.checkpoint }}`, read with {{ provenance.framework }}; converter `{{ provenance.converter }}`,
every one of its {{ provenance.variables }} variables mapped, or skipped by name as training state or as a part the official model never uses). The files read, by sha256:
{% for f, sha in provenance.files_sha256.items() %}
- `{{ f }}`: `{{ sha }}`{% endfor %}

{% endif %}
## Results

Every number under "this checkpoint" was measured by `zoo reproduce`, never typed in.

| metric | this checkpoint | {{ baseline_title }} |
|---|---|---|
{% for row in rows %}| {{ row[0] }} | {{ row[1] }} | {{ row[2] }} |
{% endfor %}
{% if baseline_text %}
Baseline: {{ baseline_text }}
{% endif %}
{% if claims %}
## Paper's claims

Each claim of the paper that our data can test, with the check over measured metrics that decides it
(the claims ledger in the zoo's `checkpoints.yaml`). Verdicts are computed by `zoo reproduce`; a claim that
fails here stays listed, with the most likely reason.

{{ claims }}
{% endif %}
{% for title, text in tables.items() %}
### {{ title }}

{{ text }}
{% endfor %}
{% for f in figures %}
![{{ f }}]({{ f }})
{% endfor %}
{% if files %}Also in this repository: {% for f in files %}[`{{ f }}`]({{ f }}){{ ", " if not loop.last }}{% endfor %}.
{% endif %}
{{ same_paper }}
## Use

```python
import zoo
model = zoo.load("{{ name }}")        # LightningModule in eval mode, weights checked by sha256
```

Fine-tune through the Lightning CLI: `zoo fit --config {{ recipe }} --model.init_args.weights={{ name }}`.

## Reproduce

```bash
zoo reproduce {{ name }}
```

Recipe: {% if recipe_url %}[`{{ recipe }}`]({{ recipe_url }}){% else %}`{{ recipe }}`{% endif %} (the resolved config that trained these weights is `config.yaml` in this repository).
{% if reproduced %}Trained by `{{ reproduced.command }}` on {{ reproduced.hardware }} (torch {{ reproduced.torch }}, lightning {{ reproduced.lightning }}, {{ reproduced.date }}): the main fit took {{ "%.0f"|format(reproduced.wall_time_s) }} s{% if reproduced.total_time_s %}, the whole command {{ "%.0f"|format(reproduced.total_time_s) }} s (with what it trains first and the analysis){% endif %}.
{% endif %}
Parameters: {{ "{:,}".format(num_params) }}. Architecture key: `{{ model_key }}`. Library: [hinton-zoo]({{ source }}).
"""


SOURCE = "https://github.com/hinton-zoo/hinton-zoo"
SAME_PAPER_BEGIN, SAME_PAPER_END = "<!-- same-paper:begin -->", "<!-- same-paper:end -->"


def same_paper(entry: Entry, repo_of: Callable[[str], str | None]) -> str:
    """The card section that links the other catalogue entries of the entry's papers: to their Hub repos where
    `repo_of(name)` knows one, else by name (`zoo publish --all` refreshes it once the repos exist)."""
    from zoo._catalog import load_catalog

    papers = {entry.paper.arxiv, *entry.paper.also}
    others = [e.name for e in load_catalog().values()
              if e.name != entry.name and papers & {e.paper.arxiv, *e.paper.also}]
    if not others:
        return ""
    lines = [f"- [{n}](https://huggingface.co/{repo_of(n)})" if repo_of(n) else f"- `{n}` (not published yet)"
             for n in others]
    return "\n".join([SAME_PAPER_BEGIN, "## Other checkpoints of this paper", "", *lines, SAME_PAPER_END, ""])


def refresh_same_paper(card: str, entry: Entry, repo_of: Callable[[str], str | None]) -> str:
    """The card text with its same-paper section linked through `repo_of` (inserted before "## Use" in cards
    written before the section existed)."""
    section = same_paper(entry, repo_of)
    if SAME_PAPER_BEGIN in card and SAME_PAPER_END in card:
        head, rest = card.split(SAME_PAPER_BEGIN, 1)
        return head + section.rstrip("\n") + rest.split(SAME_PAPER_END, 1)[1]
    head, use, rest = card.partition("\n## Use\n")
    return head + "\n" + section + use + rest if use and section else card


CLAIMS_HEADING = "## Paper's claims\n"


def refresh_claims(card: str, verdicts) -> str:
    """The card text with its "Paper's claims" table recomputed: verdicts are computed when a release is written,
    and a check that reads another entry measured later (or a check revised since) would otherwise stay stale."""
    if CLAIMS_HEADING not in card or not verdicts:
        return card
    head, rest = card.split(CLAIMS_HEADING, 1)
    lines = rest.split("\n")
    start = next((i for i, ln in enumerate(lines) if ln.startswith("| claim |")), None)
    if start is None:
        return card
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return head + CLAIMS_HEADING + "\n".join(lines[:start] + [markdown_table(verdicts)] + lines[end:])


def current_claims(folder: Path, entry: Entry, card: str) -> tuple[str, str]:
    """A release's card text with its claims table recomputed, and its claims.json text, from the verdicts as the
    catalogue stands now (the release's own measured metrics, every other entry's latest); ("card", "") unchanged
    for a release without claims.json."""
    import json

    from zoo._catalog import verdicts_of
    from zoo._claims import claims_json

    if not (folder / "claims.json").is_file():
        return card, ""
    verdicts = verdicts_of(entry, {entry.name: json.loads((folder / "metrics.json").read_text())})
    return refresh_claims(card, verdicts), claims_json(verdicts)


def refresh_release_claims(folder: Path) -> None:
    """Rewrite a release's claims table and claims.json with `current_claims` before it is published; a release
    whose entry the catalogue does not list is left as it is."""
    import json
    import os

    from zoo._catalog import load_catalog

    name = json.loads((folder / "config.json").read_text()).get("name") if (folder / "config.json").is_file() else None
    entries = load_catalog()
    if name not in entries:
        return
    card, claims = current_claims(folder, entries[name], (folder / "README.md").read_text())
    for fname, text in (("README.md", card), ("claims.json", claims)):
        if text:
            tmp = folder.with_name(f".{folder.name}.{fname}.tmp")  # beside the folder: never uploaded with it
            tmp.write_text(text)
            os.replace(tmp, folder / fname)


def _published(name: str) -> str | None:
    from zoo._catalog import load_catalog

    hub = load_catalog()[name].hub
    return hub.repo_id if hub else None


_IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".svg"}


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.4f}"


def model_card(*, entry: Entry | None, model_key: str, metrics: dict[str, float], num_params: int,
               figures: list[str], extra: dict[str, Any]) -> ModelCard:
    """`extra`: "baseline" {name, description, metrics}, "reproduced" (provenance), "tables" {title: markdown},
    "claims" (verdicts on the paper's claims, `zoo._claims.Verdict`), "provenance" (converted weights: source,
    framework, converter, files_sha256, variables)."""
    name = entry.name if entry else model_key
    baseline = extra.get("baseline") or {}
    keys = list(dict.fromkeys([*metrics, *baseline.get("metrics", {})]))
    rows = [(k, _fmt(metrics.get(k)), _fmt(baseline.get("metrics", {}).get(k))) for k in keys]
    verdicts = extra.get("claims") or []
    dataset = entry.dataset if entry else "unknown"
    evals = [EvalResult(task_type=entry.task if entry else "other", dataset_type=dataset, dataset_name=dataset,
                        metric_type=k.split("/")[-1], metric_name=k, metric_value=float(v))
             for k, v in metrics.items()]
    data = ModelCardData(
        library_name="hinton-zoo",
        license=entry.license if entry else None,
        datasets=[dataset] if entry else None,
        tags=["hinton-zoo", "pytorch-lightning", *(entry.tags if entry else [])],
        model_name=name,
        eval_results=evals or None,
    )
    return ModelCard.from_template(
        data,
        template_str=_TEMPLATE,
        title=name,
        name=name,
        description=entry.description if entry else "",
        paper=entry.paper if entry else None,
        claims=markdown_table(verdicts) if verdicts else "",
        baseline_title=f"baseline: {baseline['name']}" if baseline else "baseline",
        baseline_text=baseline.get("description", ""),
        rows=rows,
        figures=[f for f in figures if Path(f).suffix.lower() in _IMAGES],
        files=[f for f in figures if Path(f).suffix.lower() not in _IMAGES],  # e.g. a vocabulary.json
        tables=extra.get("tables") or {},
        recipe=entry.recipe if entry else "(not from a zoo recipe)",
        reproduced=extra.get("reproduced") or (entry.reproduced if entry else None),
        num_params=num_params,
        model_key=model_key,
        source=SOURCE,
        recipe_url=f"{SOURCE}/blob/main/{entry.recipe}" if entry and entry.recipe.startswith("configs/") else None,
        same_paper=same_paper(entry, _published) if entry else "",
        provenance=extra.get("provenance"),
    )
