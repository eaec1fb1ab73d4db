"""`zoo reproduce --all` and `zoo publish --all`: the whole catalogue in two commands, safe to interrupt and rerun.

`reproduce_all` trains every matching entry in dependency order (an entry's baseline and `requires:` first),
goes on past a failure, and records each finished entry in `$ZOO_HOME/reproduce-all.json`, so the same command
run again resumes after the last finished entry. Releases are written atomically (`zoo._hub.write_release`), so a
killed run never leaves one that looks complete. `publish_all` uploads every local release that the catalogue
does not pin yet (or whose files changed), one Hub commit per repo, and pins each commit in the catalogue only
after that commit succeeded.
"""
from __future__ import annotations

import difflib
import gc
import heapq
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import _catalog
from zoo._errors import UnknownCheckpointError
from zoo._paths import catalog_path, releases_dir, zoo_home
from zoo._reproduce import _fmt

WEIGHTS = "model.safetensors"
STATE = "reproduce-all.json"


@dataclass
class Step:
    name: str
    why: str  # "" when the pattern chose it, else "baseline of X" / "required by X"
    skip: str | None  # why --only-missing leaves it alone
    seconds: float | None  # the catalogue's recorded time of this entry alone (`recorded_seconds`)


def recorded_seconds(entry: _catalog.Entry, entries: dict[str, _catalog.Entry] | None = None) -> float | None:
    """The catalogue's recorded time of this entry alone under `zoo reproduce --all` (which trains baselines and
    requirements as steps of their own): its fit, test and analysis, without what the recorded command trained
    first. Records older than `own_time_s` hold only the whole command; when its time beyond the fit is at least
    nine tenths of the baseline's fit, the baseline evidently ran inside it and that fit is taken off."""
    rec = entry.reproduced or {}
    if rec.get("own_time_s"):
        return rec["own_time_s"]
    total, fit = rec.get("total_time_s"), rec.get("wall_time_s")
    if total and fit and entry.baseline and entries and entry.baseline in entries:
        base_fit = (entries[entry.baseline].reproduced or {}).get("wall_time_s")
        if base_fit and total - fit >= 0.9 * base_fit:
            return round(total - base_fit, 1)
    return total or fit


def _has_release(name: str) -> bool:
    return (releases_dir() / name / WEIGHTS).is_file()


def release_mismatch(entry: _catalog.Entry) -> str | None:
    """Why the local release does not stand for the catalogue entry, or None when it does: its files verify,
    it was built with the entry's model and init_args, and every catalogued metric is within tolerance."""
    from zoo._hub import verify_release

    folder = releases_dir() / entry.name
    if not (folder / WEIGHTS).is_file():
        return "no release"
    try:
        verify_release(folder)
        cfg = json.loads((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError) as err:
        return f"release damaged ({err})"
    if cfg.get("model") != entry.model or any(cfg.get("init_args", {}).get(k) != v
                                              for k, v in entry.init_args.items()):
        return "release built with other init_args than the catalogue's"
    off = _outside(entry, metrics)
    return f"release metrics outside tolerance: {', '.join(off)}" if off else None


def _outside(entry: _catalog.Entry, metrics: dict[str, float]) -> list[str]:
    """The catalogued metrics with a tolerance that `metrics` misses or lands outside."""
    return [k for k, tol in entry.tolerance.items()
            if k in entry.metrics and (k not in metrics or abs(metrics[k] - entry.metrics[k]) > tol)]


def plan(pattern: str = "*", *, only_missing: bool = False, baselines: bool = True) -> list[Step]:
    """The entries `reproduce --all PATTERN` trains, dependencies first: the matching ones, their baselines
    (unless `baselines=False`) and whatever they require that has neither a release nor a Hub pin."""
    entries = _catalog.load_catalog()
    chosen = _catalog.names(pattern)
    if not chosen:
        err = UnknownCheckpointError(pattern, difflib.get_close_matches(pattern, list(entries), n=3, cutoff=0.5))
        err.args = ((f"no catalogue entry matches {pattern!r}; `zoo list` shows the names. LightningCLI options "
                     "go as --key=value, so that their values are not taken for the pattern."),)
        raise err
    why = {n: "" for n in chosen}
    todo = list(chosen)
    while todo:
        e = entries[todo.pop()]
        deps = [(e.baseline, f"baseline of {e.name}")] if baselines and e.baseline else []
        deps += [(r, f"required by {e.name}") for r in e.requires
                 if entries[r].hub is None and not _has_release(r)]
        for d, reason in deps:
            if d not in why:
                why[d] = reason
                todo.append(d)
    before = {n: {d for d in (entries[n].baseline, *entries[n].requires) if d in why} for n in why}
    ready = [n for n, deps in before.items() if not deps]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        for m, deps in before.items():
            if n in deps:
                deps.discard(n)
                if not deps:
                    heapq.heappush(ready, m)
    if len(order) != len(why):
        raise _catalog.CatalogError(f"checkpoints.yaml: baseline/requires form a cycle among "
                                    f"{sorted(set(why) - set(order))}")
    steps = []
    for n in order:
        e = entries[n]
        skip = None
        if only_missing:
            if e.hub is not None:
                skip = f"published ({e.hub.repo_id}@{e.hub.revision[:7]})"
            elif release_mismatch(e) is None:
                skip = "release matches the catalogue"
        steps.append(Step(n, why[n], skip, recorded_seconds(e, entries)))
    return steps


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds / 60:.1f} min"


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def expected_time(steps: list[Step]) -> str:
    """'about 42 min (recorded on 2 CPU cores ...)' over the steps that will run."""
    entries = _catalog.load_catalog()
    run = [s for s in steps if s.skip is None]
    known = [s for s in run if s.seconds]
    where = sorted({(entries[s.name].reproduced or {}).get("hardware", "?") for s in known})
    text = (f"about {_minutes(sum(s.seconds for s in known))}, the sum of the catalogue's recorded times "
            f"(on {', '.join(where)})" if known else "unknown: the catalogue records no time for them")
    missing = [s.name for s in run if not s.seconds]
    if known and missing:
        text += f", plus {len(missing)} entries with no recorded time ({', '.join(missing)})"
    return text


def plan_table(steps: list[Step]) -> str:
    rows = [("#", "entry", "why", "action", "recorded time")]
    rows += [(str(i), s.name, s.why or "matches", f"skip: {s.skip}" if s.skip else "train",
              f"{s.seconds:.0f} s" if s.seconds else "–") for i, s in enumerate(steps, 1)]
    return table(rows)


# ----------------------------------------------------------------------------- the summary table
def _headline(entry: _catalog.Entry, measured: dict[str, float]) -> str | None:
    for k in ("test/acc", *entry.tolerance, *entry.metrics, *measured):
        if k in measured or k in entry.metrics:
            return k
    return None


def _row(entry: _catalog.Entry, measured: dict[str, float], within: bool | None, claims: list[str],
         seconds: float | None, status: str, sha256: str | None = None) -> dict[str, Any]:
    """One summary row, plain data so the resume state can hold it. `claims`: the verdict of each claim."""
    k = _headline(entry, measured)
    testable = [c for c in claims if c in ("holds", "fails")]
    return {"entry": entry.name,
            "measured": f"{k} {_fmt(measured.get(k))} vs {_fmt(entry.metrics.get(k))}" if k else "–",
            "within": "–" if within is None else ("yes" if within else "NO"),
            "claims": f"{testable.count('holds')}/{len(testable)}" if testable else "–",
            "time": "–" if seconds is None else f"{seconds:.0f} s", "status": status, "sha256": sha256}


def _row_from_release(entry: _catalog.Entry, status: str) -> dict[str, Any]:
    """A row for an entry not trained in this run, from what its release folder recorded."""
    folder = releases_dir() / entry.name
    if not (folder / "metrics.json").is_file():
        return _row(entry, {}, None, [], None, status)
    measured = json.loads((folder / "metrics.json").read_text())
    claims = [c["verdict"] for c in json.loads((folder / "claims.json").read_text())] \
        if (folder / "claims.json").is_file() else []
    within = None if not entry.tolerance or not entry.metrics else not _outside(entry, measured)
    return _row(entry, measured, within, claims, None, status)


def summary_table(rows: list[dict[str, Any]]) -> str:
    head = ("entry", "measured vs catalogue", "within tolerance", "claims held", "wall time", "status")
    keys = ("entry", "measured", "within", "claims", "time", "status")
    return table([head, *[tuple(str(r[k]) for k in keys) for r in rows]])


# ----------------------------------------------------------------------------- resume state
def _state_path() -> Path:
    return zoo_home() / STATE


def _load_state(key: dict[str, Any]) -> dict[str, Any]:
    """The finished rows of an earlier run of the same command, when that run did not get to the end."""
    try:
        state = json.loads(_state_path().read_text())
    except (OSError, ValueError):
        return {"key": key, "done": {}}
    return state if state.get("key") == key else {"key": key, "done": {}}


def _save_state(state: dict[str, Any]) -> None:
    path = _state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, path)


def _weights_sha(name: str) -> str | None:
    try:
        return json.loads((releases_dir() / name / "config.json").read_text())["files"][WEIGHTS]
    except (OSError, ValueError, KeyError):
        return None


def _clear_partials(name: str) -> None:
    """Remove what a killed `write_release` of this entry left: hidden temporary folders that never became the
    release. If it was killed between its two renames, the previous release goes back in place."""
    root = releases_dir()
    for tmp in root.glob(f".{name}.partial-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    olds = sorted(root.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not (root / name).exists():
        os.replace(olds.pop(), root / name)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- zoo reproduce --all
def reproduce_all(pattern: str = "*", overrides: list[str] | None = None, *, only_missing: bool = False,
                  update_catalog: bool = False, baselines: bool = True, dry_run: bool = False,
                  echo: Callable[[str], None] = print) -> int:
    """Reproduce every entry of the plan; returns the exit code: 0 all within tolerance, 3 some outside it,
    1 some failed, 130 interrupted (the same command resumes)."""
    from zoo._reproduce import reproduce

    overrides = list(overrides or [])
    steps = plan(pattern, only_missing=only_missing, baselines=baselines)
    key = {"pattern": pattern, "only_missing": only_missing, "update_catalog": update_catalog,
           "baselines": baselines, "overrides": overrides, "catalog": str(catalog_path().resolve())}
    state = _load_state(key)
    resumed = {n for n, row in state["done"].items() if row.get("sha256") and row["sha256"] == _weights_sha(n)}
    todo = [s for s in steps if s.skip is None and s.name not in resumed]
    echo(plan_table(steps))
    if resumed:
        echo(f"resuming an interrupted run: {len(resumed)} entries finished earlier are kept "
             f"({', '.join(sorted(resumed))})")
    echo(f"{len(todo)} of {len(steps)} entries to train; expected {expected_time(todo)}"
         + (f"; overrides {' '.join(overrides)} make the recorded times an upper bound" if overrides else ""))
    if dry_run:
        return 0
    entries = _catalog.load_catalog()
    rows: list[dict[str, Any]] = []
    failed: set[str] = set()
    codes = {0}
    interrupted = None
    for i, step in enumerate(steps, 1):
        e = entries[step.name]
        if step.name in resumed:
            rows.append({**state["done"][step.name], "status": state["done"][step.name]["status"] + " (earlier run)"})
            continue
        if step.skip:
            rows.append(_row_from_release(e, f"skipped: {step.skip}"))
            continue
        blocked = [r for r in e.requires if r in failed]
        if blocked:
            rows.append(_row(e, {}, None, [], None, f"not run: needs {', '.join(blocked)}, which failed"))
            failed.add(step.name)
            codes.add(1)
            continue
        _clear_partials(step.name)
        echo(f"\n=== [{i}/{len(steps)}] {step.name}" + (f" ({step.why})" if step.why else ""))
        started = time.perf_counter()
        try:
            out = reproduce(step.name, overrides, update_catalog=update_catalog, with_baseline=False, echo=echo)
        except (KeyboardInterrupt, SystemExit) as err:  # Lightning turns Ctrl-C into SystemExit(1)
            interrupted = f"{type(err).__name__} during {step.name}"
            rows.append(_row(e, {}, None, [], time.perf_counter() - started, "interrupted"))
            break
        except Exception as err:  # noqa: BLE001  go on with the others; the summary says what failed
            echo(traceback.format_exc())
            msg = str(err).splitlines()[0] if str(err) else ""
            rows.append(_row(e, {}, None, [], time.perf_counter() - started,
                             f"FAILED: {type(err).__name__}: {msg}"[:120]))
            failed.add(step.name)
            codes.add(1)
            continue
        if "release" not in out:  # a non-zero DDP rank: rank 0 reports
            continue
        status = "ok" if out["within"] else "OUTSIDE tolerance"
        if update_catalog:
            status += ", catalogue updated"
        if not out["ok"]:
            codes.add(3)
        row = _row(e, out["metrics"], out["within"] if e.metrics else None, [v.status for v in out["claims"]],
                   time.perf_counter() - started, status, _weights_sha(step.name))
        rows.append(row)
        state["done"][step.name] = row
        _save_state(state)
        del out
        gc.collect()
    echo("\n" + summary_table(rows))
    if interrupted:
        echo(f"\nstopped ({interrupted}); no release of it was written. Run the same command again to resume: "
             f"the {len(state['done'])} finished entries are kept.")
        return 130
    if failed:
        echo(f"\n{len(failed)} failed: {', '.join(sorted(failed))}. Run the same command again to retry them; "
             "the finished entries are kept.")
        return 1
    _state_path().unlink(missing_ok=True)  # finished: the next run of this command starts afresh
    return max(codes)


# ----------------------------------------------------------------------------- zoo publish --all
@dataclass
class Upload:
    name: str
    repo_id: str
    files: dict[str, str]  # file -> sha256, the model card as it will be uploaded
    sizes: dict[str, int]
    action: str  # "new", "changed: a, b", or "up to date"
    card: str  # the model card's text with its links to the same paper's repos and its claims' current verdicts
    reason: str = ""  # why a refused release is not uploaded
    claims: str = ""  # claims.json with the current verdicts ("" when the release has none)


def _uploads(org: str, pattern: str) -> list[Upload]:
    from zoo._card import current_claims, refresh_same_paper
    from zoo._hub import sha256_bytes, verify_release

    entries = _catalog.load_catalog()
    checked: dict[str, dict[str, str] | str] = {}  # name -> {file: sha256}, or why the release is refused
    for n in _catalog.names(pattern):
        if (releases_dir() / n).is_dir():
            try:
                checked[n] = verify_release(releases_dir() / n)
            except (OSError, ValueError) as err:  # incomplete or altered: refused, the others go on
                checked[n] = str(err)
    repo_of = {n: e.hub.repo_id for n, e in entries.items() if e.hub is not None}
    repo_of.update({n: f"{org}/{n}" for n, files in checked.items() if isinstance(files, dict)})
    out = []
    for n, files in checked.items():
        if isinstance(files, str):
            out.append(Upload(n, f"{org}/{n}", {}, {}, "refused", "", files))
            continue
        folder = releases_dir() / n
        card = refresh_same_paper((folder / "README.md").read_text(), entries[n], repo_of.get)
        card, claims = current_claims(folder, entries[n], card)
        files["README.md"] = sha256_bytes(card.encode())
        if claims:
            files["claims.json"] = sha256_bytes(claims.encode())
        sizes = {f: (folder / f).stat().st_size for f in files}
        sizes["README.md"] = len(card.encode())
        if claims:
            sizes["claims.json"] = len(claims.encode())
        hub = entries[n].hub
        if hub is None:
            action = "new"
        else:
            changed = sorted(f for f in set(files) | set(hub.files) if files.get(f) != hub.files.get(f))
            action = f"changed: {', '.join(changed)}" if changed else "up to date"
        out.append(Upload(n, f"{org}/{n}", files, sizes, action, card, claims=claims))
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def publish_all(org: str, pattern: str = "*", *, token: str | None = None, endpoint: str | None = None,
                dry_run: bool = False, echo: Callable[[str], None] = print) -> int:
    """Publish every local release matching `pattern` that is new or changed to ORG/NAME; returns the exit code
    (0 all published or up to date, 1 some failed: the catalogue pins only the commits that succeeded)."""
    from zoo._hub import publish

    uploads = _uploads(org, pattern)
    if not uploads:
        echo(f"no local releases match {pattern!r} in {releases_dir()}; `zoo reproduce --all` makes them.")
        return 1
    todo = [u for u in uploads if u.action == "new" or u.action.startswith("changed")]
    refused = [u for u in uploads if u.action == "refused"]
    rows = [("entry", "repo", "action", "files", "size")]
    rows += [(u.name, u.repo_id, u.action, str(len(u.files)), _mb(sum(u.sizes.values()))) for u in uploads]
    echo(table(rows))
    echo(f"{len(todo)} of {len(uploads)} releases to upload, {_mb(sum(sum(u.sizes.values()) for u in todo))}")
    for u in refused:
        echo(f"{u.name}: refused, run `zoo reproduce {u.name}` again: {u.reason}")
    if dry_run or not todo:
        return 1 if refused else 0
    if token is None:
        from huggingface_hub import get_token

        if get_token() is None:
            echo("publishing needs a Hugging Face token with write access to the organisation: run "
                 "`huggingface-cli login`, set HF_TOKEN, or pass --token. Nothing was uploaded.")
            return 2
    failed = []
    for u in todo:
        folder = releases_dir() / u.name
        for fname, text in (("README.md", u.card), ("claims.json", u.claims)):
            if text:
                tmp = releases_dir() / f".{u.name}.{fname}.tmp"  # beside the folder: never uploaded with it
                tmp.write_text(text)
                os.replace(tmp, folder / fname)
        try:
            res = publish(folder, u.repo_id, token=token, endpoint=endpoint)
        except Exception as err:  # noqa: BLE001  the others may still go through; this one's pin is unchanged
            failed.append(u.name)
            echo(f"{u.name}: FAILED, the catalogue is unchanged for it: {type(err).__name__}: {err}")
            continue
        echo(f"{u.name}: committed {res['revision']} to {u.repo_id}, pinned in {catalog_path()}")
    if failed:
        echo(f"{len(failed)} failed: {', '.join(failed)}. Run the same command again: what was committed is "
             "pinned and will be skipped.")
    return 1 if failed or refused else 0
