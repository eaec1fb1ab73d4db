"""Model cards (huggingface_hub.ModelCard) with `model-index` results from measured metrics."""
from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from zoo._catalog import Entry

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ description }}

{% if paper %}Paper: [{{ paper.title }}]({{ paper.url }}) (arXiv {{ paper.arxiv }}).
The paper's setting: {{ paper.setting }}.
{% if paper.also %}This checkpoint also runs the experiments of {% for a in paper.also %}[arXiv {{ a }}](https://arxiv.org/abs/{{ a }}){{ ", " if not loop.last }}{% endfor %}.
{% endif %}{% endif %}
## Results

Every number under "this checkpoint" was measured by `zoo reproduce`, never typed in.

| metric | this checkpoint | {{ baseline_title }} | paper ({{ paper_setting }}) |
|---|---|---|---|
{% for row in rows %}| {{ row[0] }} | {{ row[1] }} | {{ row[2] }} | {{ row[3] }} |
{% endfor %}
{% if baseline_text %}
Baseline: {{ baseline_text }}
{% endif %}
{% for title, text in tables.items() %}
### {{ title }}

{{ text }}
{% endfor %}
{% for f in figures %}
![{{ f }}]({{ f }})
{% endfor %}
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

Recipe: `{{ recipe }}` (the resolved config that trained these weights is `config.yaml` in this repository).
{% if reproduced %}Trained by `{{ reproduced.command }}` in {{ "%.0f"|format(reproduced.wall_time_s) }} s on {{ reproduced.hardware }} (torch {{ reproduced.torch }}, lightning {{ reproduced.lightning }}, {{ reproduced.date }}).
{% endif %}
Parameters: {{ "{:,}".format(num_params) }}. Architecture key: `{{ model_key }}`. Library: [hinton-zoo](https://github.com/hinton-zoo/hinton-zoo).
"""


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.4f}"


def model_card(*, entry: Entry | None, model_key: str, metrics: dict[str, float], num_params: int,
               figures: list[str], extra: dict[str, Any]) -> ModelCard:
    name = entry.name if entry else model_key
    baseline = extra.get("baseline") or {}
    reported = entry.paper.reported if entry else {}
    keys = list(dict.fromkeys([*metrics, *baseline.get("metrics", {}), *reported]))
    rows = [(k, _fmt(metrics.get(k)), _fmt(baseline.get("metrics", {}).get(k)), _fmt(reported.get(k))) for k in keys]
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
        paper_setting=entry.paper.setting if entry else "–",
        baseline_title=f"baseline: {baseline['name']}" if baseline else "baseline",
        baseline_text=baseline.get("description", ""),
        rows=rows,
        figures=figures,
        tables=extra.get("tables") or {},
        recipe=entry.recipe if entry else "(not from a zoo recipe)",
        reproduced=extra.get("reproduced") or (entry.reproduced if entry else None),
        num_params=num_params,
        model_key=model_key,
    )
