"""`zoo reproduce NAME`: train an entry's recipe, test it, compare, and save a release atomically."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zoo import _catalog
from zoo._paths import releases_dir, resolve_recipe, zoo_home


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    limited = f", {threads} torch thread{'s' if threads > 1 else ''}" if threads < (os.cpu_count() or 1) else ""
    return f"{os.cpu_count()} CPU cores ({cpu}{limited})"


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def comparison_table(entry: _catalog.Entry, measured: dict[str, float]) -> tuple[str, bool]:
    """Measured vs catalogue (± tolerance), and whether every catalogued metric is within tolerance. The paper's
    numbers are not columns here: its setting usually differs, so they are judged as claims (`claims_table`)."""
    rows = [("metric", "measured", "catalogue", "tolerance", "status")]
    ok = True
    for k in dict.fromkeys([*measured, *entry.metrics]):
        m, c, tol = measured.get(k), entry.metrics.get(k), entry.tolerance.get(k)
        if c is None or m is None:
            status = "new" if m is not None else "not measured"
        elif tol is None:
            status = "no tolerance"
        elif abs(m - c) > tol:
            status, ok = "OUTSIDE", False
        else:
            status = "ok"
        rows.append((k, _fmt(m), _fmt(c), _fmt(tol), status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines), ok


def _dump_all(cli) -> str:
    """The resolved config, None values included (jsonargparse renamed skip_none to skip_unset in 4.49)."""
    import inspect

    keep = "skip_unset" if "skip_unset" in inspect.signature(cli.parser.dump).parameters else "skip_none"
    return cli.parser.dump(cli.config, **{keep: False})


@contextlib.contextmanager
def _argv_of(argv: list[str]):
    saved, sys.argv = sys.argv, argv
    try:
        yield
    finally:
        sys.argv = saved


def train_and_test(entry: _catalog.Entry, overrides: list[str]) -> dict[str, Any]:
    """Run the recipe through ZooCLI (the same path as `zoo fit`), then test the final weights."""
    import lightning
    import torch

    from zoo._lightning_cli import ZooCLI

    run_dir = zoo_home() / "runs" / entry.name / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    # --ckpt_path=FILE resumes an interrupted run (e.g. one whose analysis failed after training) from its checkpoint
    resume = next((o.split("=", 1)[1] for o in overrides if o.startswith("--ckpt_path=")), None)
    cli_overrides = [o for o in overrides if not o.startswith("--ckpt_path=")]
    if resume and not Path(resume).is_file():
        raise FileNotFoundError(f"--ckpt_path={resume}: no such checkpoint (a run's checkpoints are under "
                                f"{zoo_home() / 'runs' / entry.name}/*/checkpoints/)")
    args = ["--config", str(resolve_recipe(entry.recipe)), f"--trainer.default_root_dir={run_dir}", *cli_overrides]
    start = time.perf_counter()
    with _argv_of(["zoo"]):  # LightningCLI warns when both sys.argv and args carry options
        cli = ZooCLI(args=args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume)
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    wall = time.perf_counter() - start
    metrics = {k: round(float(v), 6) for k, v in results[0].items() if k.startswith("test/")}
    return {
        "cli": cli,
        "module": cli.model,
        "metrics": metrics,
        "config_yaml": _dump_all(cli),
        "reproduced": {
            "command": "zoo reproduce " + " ".join([entry.name, *map(shlex.quote, overrides)]),
            "wall_time_s": round(wall, 1),
            "hardware": hardware(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "torch": torch.__version__.split("+")[0],
            "lightning": lightning.__version__,
            **({"resumed_from": resume} if resume else {}),
        },
        "run_dir": str(run_dir),
    }


def reproduce(name: str, overrides: list[str] | None = None, *, update_catalog: bool = False,
              with_baseline: bool = True, echo=print, nested: bool = False) -> dict[str, Any]:
    """Train, test, compare and release one entry (and, first, the backprop baseline it is compared with)."""
    from zoo._claims import text_table
    from zoo._hub import release_verdicts, write_release

    started = time.perf_counter()
    entry = _catalog.get(name)
    overrides = list(overrides or [])
    for needed in entry.requires:  # e.g. a distilled student's teacher: reproduced first when not at hand
        if not _at_hand(needed):
            echo(f"== {name}: first {needed}, which it needs")
            reproduce(needed, overrides, update_catalog=update_catalog, with_baseline=False, echo=echo)
    base = None
    if nested and entry.baseline and not _at_hand(entry.baseline):
        # reproduced as another entry's baseline: its own comparison (e.g. dmfa-digits against mfa-digits) feeds
        # its analysis metrics, which --update-catalog would otherwise drop
        echo(f"== {name}: first {entry.baseline}, which its analysis compares with")
        reproduce(entry.baseline, overrides, update_catalog=update_catalog, with_baseline=False, echo=echo,
                  nested=True)
    if with_baseline and entry.baseline:
        echo(f"== {name}: first its baseline, {entry.baseline}")
        base = reproduce(entry.baseline, overrides, update_catalog=update_catalog, with_baseline=False, echo=echo,
                         nested=True)
    echo(f"== {name}: training {entry.recipe}")
    own_started = time.perf_counter()
    out = train_and_test(entry, overrides)
    module, measured = out["module"], out["metrics"]
    if out["cli"].trainer.global_rank != 0:
        return out
    table, ok = comparison_table(entry, measured)
    echo(f"\n{name}  ({out['reproduced']['wall_time_s']:.0f} s on {out['reproduced']['hardware']})\n{table}")
    if base is not None:
        echo(f"baseline {entry.baseline}: " + ", ".join(f"{k}={v:.4f}" for k, v in base["metrics"].items()))
    baseline_card = None
    if entry.baseline:
        b_entry = _catalog.get(entry.baseline)
        b_metrics = base["metrics"] if base else _released_metrics(entry.baseline) or b_entry.metrics
        baseline_card = {"name": entry.baseline, "description": b_entry.description, "metrics": b_metrics}
    with tempfile.TemporaryDirectory() as figdir:
        figures = (module.release_figures(Path(figdir), out["cli"].datamodule)
                   if hasattr(module, "release_figures") else {})
        analysis = module.analyse(Path(figdir), out["cli"].datamodule) if hasattr(module, "analyse") else {}
        figures.update(analysis.get("figures", {}))
        measured.update({k: round(float(v), 6) for k, v in analysis.get("metrics", {}).items()})
        for title, text in analysis.get("tables", {}).items():
            echo(f"\n{title}\n{text}")
        if analysis.get("metrics"):
            table, ok = comparison_table(entry, measured)
            echo(f"\n{name} with its analysis\n{table}")
        verdicts = release_verdicts(entry, measured, baseline_card)
        if verdicts:
            echo(f"\n{name}: the paper's claims\n{text_table(verdicts)}")
        now = time.perf_counter()
        out["reproduced"]["total_time_s"] = round(now - started, 1)
        out["reproduced"]["own_time_s"] = round(now - own_started, 1)  # without what it trained first
        folder = write_release(module, releases_dir() / name, metrics=measured, name=name,
                               config_yaml=out["config_yaml"], extra_files=figures,
                               card_extra={"baseline": baseline_card, "reproduced": out["reproduced"],
                                           "tables": analysis.get("tables", {}), "claims": verdicts})
    echo(f"release saved: {folder} (main fit {out['reproduced']['wall_time_s']:.0f} s, "
         f"whole command {out['reproduced']['total_time_s']:.0f} s)")
    within = ok  # against the catalogue as it was before this run
    if update_catalog:
        path = _catalog.update_entry(name, metrics=measured,
                                     num_params=sum(p.numel() for p in module.parameters()),
                                     reproduced=out["reproduced"])
        echo(f"catalogue updated: {path}")
        ok = True
    elif not ok:
        echo("WARNING: a metric landed outside the catalogue's tolerance (see OUTSIDE above).")
    out.update(ok=ok and (base is None or base["ok"]), release=str(folder), within=within, claims=verdicts)
    return out


def _at_hand(name: str) -> bool:
    """Whether `name` can be loaded without training it: published, or released in $ZOO_HOME."""
    return _catalog.get(name).hub is not None or (releases_dir() / name / "model.safetensors").is_file()


def _released_metrics(name: str) -> dict[str, float] | None:
    p = releases_dir() / name / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else None
