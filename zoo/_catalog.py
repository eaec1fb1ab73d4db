"""checkpoints.yaml: typed entries, schema validation, lookup with close-match suggestions.

Pure Python (yaml only): `zoo list` and `zoo info` go through here without importing torch.
"""
from __future__ import annotations

import contextlib
import difflib
import fnmatch
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from zoo._claims import Claim, Verdict, parse_claims, verdict
from zoo._errors import CatalogError, UnknownCheckpointError
from zoo._paths import catalog_path

SCHEMA_VERSION = 1
HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
HEADER = (
    "# The hinton-zoo catalogue: one entry per released (or releasable) checkpoint.\n"
    "# `metrics`, `num_params` and `reproduced` are written by `zoo reproduce NAME --update-catalog`,\n"
    "# `hub` by `zoo publish`; never type them by hand. Schema: zoo/_catalog.py, checked by tests.\n"
    "# `claims:` is the claims ledger (schema: zoo/_claims.py): each paper's testable claims with a check over\n"
    "# measured metrics; verdicts are computed from `metrics`, never written here.\n"
)


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str
    files: dict[str, str]

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/tree/{self.revision}"


@dataclass(frozen=True)
class PaperRef:
    arxiv: str
    title: str
    setting: str
    also: tuple[str, ...] = ()  # arXiv ids of further papers whose experiments this entry runs

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"


@dataclass(frozen=True)
class Entry:
    """One catalogue entry; field meanings in DESIGN.md ("The catalogue")."""

    name: str
    model: str
    init_args: dict[str, Any]
    data: dict[str, Any]
    recipe: str
    task: str
    dataset: str
    paper: PaperRef
    license: str
    metrics: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)
    hub: HubRef | None = None
    head: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    num_params: int | None = None
    baseline: str | None = None
    requires: list[str] = field(default_factory=list)
    description: str = ""
    reproduced: dict[str, Any] | None = None
    source: dict[str, Any] | None = None  # official weights `zoo convert` turns into a release

    def headline(self) -> str:
        """The one number that sums the entry up: test/acc as a percentage, otherwise the first metric its
        tolerance names (`test/bpd 2.689`); "" while unmeasured. README tables and `zoo list` show this."""
        key = "test/acc" if "test/acc" in self.metrics or not self.tolerance else next(iter(self.tolerance))
        v = self.metrics.get(key)
        if v is None:
            return ""
        return f"{100 * v:.2f}%" if key == "test/acc" else f"{key} {v:.4g}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("name")
        if d["paper"]["also"]:
            d["paper"]["also"] = list(d["paper"]["also"])
        else:
            d["paper"].pop("also")
        return d


_REQUIRED = ("model", "init_args", "data", "recipe", "task", "dataset", "paper", "license")
_KNOWN = {f.name for f in fields(Entry)} - {"name"}


def _fail(name: str, msg: str) -> None:
    raise CatalogError(f"checkpoints.yaml, entry {name!r}: {msg}")


def _float_map(name: str, key: str, value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
        _fail(name, f"`{key}` must map metric names to numbers, got {value!r}")
    return {str(k): float(v) for k, v in value.items()}


def parse_entry(name: str, raw: Any) -> Entry:
    """Validate one raw YAML mapping against the schema and return the typed entry."""
    if not NAME.match(name):
        _fail(name, "names are kebab case: paper-dataset[-variant]")
    if not isinstance(raw, dict):
        _fail(name, "must be a mapping")
    unknown = set(raw) - _KNOWN
    if unknown:
        close = {k: difflib.get_close_matches(k, _KNOWN, n=1) for k in unknown}
        hints = ", ".join(f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for k, c in close.items())
        _fail(name, f"unknown field(s) {hints}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        _fail(name, f"missing required field(s) {missing}")
    if not isinstance(raw["init_args"], dict):
        _fail(name, "`init_args` must be a mapping")
    data = raw["data"]
    if not isinstance(data, dict) or "class_path" not in data:
        _fail(name, "`data` must be {class_path: ..., init_args: {...}}")
    p = raw["paper"]
    if not isinstance(p, dict) or not {"arxiv", "title", "setting"} <= set(p):
        _fail(name, "`paper` needs arxiv, title and setting")
    if "reported" in p:
        _fail(name, "`paper.reported` is gone: the paper's numbers sit in the claims ledger (`claims:`), as a "
                    "claim's `reported` text beside its setting, never under our metric names")
    unknown = set(p) - {"arxiv", "title", "setting", "also"}
    if unknown:
        _fail(name, f"unknown field(s) in `paper`: {', '.join(map(repr, sorted(unknown)))}")
    also = p.get("also", [])
    if not isinstance(also, list) or not all(isinstance(a, str) and re.fullmatch(r"\d{4}\.\d{4,5}", a) for a in also):
        _fail(name, "`paper.also` must be a list of arXiv ids such as '1811.06969'")
    paper = PaperRef(str(p["arxiv"]), p["title"], p["setting"], tuple(also))
    hub = None
    if raw.get("hub") is not None:
        h = raw["hub"]
        if not isinstance(h, dict) or not {"repo_id", "revision", "files"} <= set(h):
            _fail(name, "`hub` needs repo_id, revision and files")
        if not HEX40.match(str(h["revision"])):
            _fail(name, f"hub.revision must be a 40-hex commit id, got {h['revision']!r}")
        if "model.safetensors" not in h["files"]:
            _fail(name, "hub.files must pin model.safetensors")
        for fname, sha in h["files"].items():
            if not HEX64.match(str(sha)):
                _fail(name, f"hub.files[{fname!r}] must be a sha256 (64 hex), got {sha!r}")
        hub = HubRef(h["repo_id"], str(h["revision"]), dict(h["files"]))
    metrics = _float_map(name, "metrics", raw.get("metrics"))
    tolerance = _float_map(name, "tolerance", raw.get("tolerance"))
    if set(tolerance) - set(metrics) and metrics:
        _fail(name, f"tolerance for unmeasured metric(s) {sorted(set(tolerance) - set(metrics))}")
    source = raw.get("source")
    if source is not None:
        need = {"framework", "url", "converter", "size"}
        if not isinstance(source, dict) or not need <= set(source):
            _fail(name, f"`source` needs {', '.join(sorted(need))}")
        if source["framework"] not in ("tensorflow", "pytorch", "numpy"):
            _fail(name, f"source.framework must be 'tensorflow', 'pytorch' or 'numpy', got {source['framework']!r}")
        if unknown := set(source) - need - {"official_name", "include", "tokenizer"}:
            _fail(name, f"unknown field(s) in `source`: {', '.join(map(repr, sorted(unknown)))}")
        include = source.get("include", ["*"])
        if not isinstance(include, list) or not include or not all(isinstance(i, str) for i in include):
            _fail(name, "source.include lists file-name patterns to download (default: every file)")
        if not str(source["url"]).startswith(("gs://", "https://")):
            _fail(name, f"source.url must be a gs:// or https:// address, got {source['url']!r}")
        if "tokenizer" in source and not str(source["tokenizer"]).startswith("gs://"):
            _fail(name, f"source.tokenizer must be the gs:// address of the tokenizer file, got {source['tokenizer']!r}")
    if raw.get("num_params") is not None and not isinstance(raw["num_params"], int):
        _fail(name, "`num_params` must be an integer")
    return Entry(
        name=name,
        model=str(raw["model"]),
        init_args=dict(raw["init_args"]),
        data=dict(data),
        recipe=str(raw["recipe"]),
        task=str(raw["task"]),
        dataset=str(raw["dataset"]),
        paper=paper,
        license=str(raw["license"]),
        metrics=metrics,
        tolerance=tolerance,
        hub=hub,
        head=list(raw.get("head") or []),
        tags=list(raw.get("tags") or []),
        num_params=raw.get("num_params"),
        baseline=raw.get("baseline"),
        requires=list(raw.get("requires") or []),
        description=str(raw.get("description") or ""),
        reproduced=raw.get("reproduced"),
        source=dict(source) if source else None,
    )


_cache: dict[tuple[str, float], dict[str, Entry]] = {}
_claims_cache: dict[tuple[str, float], dict[str, list[Claim]]] = {}


def load_catalog(path: Path | None = None) -> dict[str, Entry]:
    """All entries of the catalogue at `path` (default: `ZOO_CATALOG` or the packaged one), validated."""
    return _load(path)[0]


def load_claims(path: Path | None = None) -> dict[str, list[Claim]]:
    """The claims ledger (the catalogue's `claims:` section): arXiv id -> that paper's claims, validated."""
    return _load(path)[1]


def _load(path: Path | None) -> tuple[dict[str, Entry], dict[str, list[Claim]]]:
    path = Path(path) if path else catalog_path()
    try:
        key = (str(path), path.stat().st_mtime)
    except FileNotFoundError:
        raise CatalogError(f"catalogue file not found: {path} (ZOO_CATALOG={os.environ.get('ZOO_CATALOG')!r})")
    if key not in _cache:
        doc = yaml.safe_load(path.read_text()) or {}
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise CatalogError(f"{path}: schema_version must be {SCHEMA_VERSION}")
        entries = {n: parse_entry(n, raw) for n, raw in (doc.get("checkpoints") or {}).items()}
        for e in entries.values():
            for other in ([e.baseline] if e.baseline else []) + e.requires:
                if other not in entries:
                    _fail(e.name, f"{other!r} (baseline or requires) is not in the catalogue")
        _claims_cache[key] = parse_claims(doc.get("claims"), entries)
        _cache[key] = entries
    return _cache[key], _claims_cache[key]


def claims_of(entry: Entry) -> list[Claim]:
    """The ledger's claims for the papers an entry runs (its paper, then `paper.also`)."""
    ledger = load_claims()
    return [c for arxiv in (entry.paper.arxiv, *entry.paper.also) for c in ledger.get(arxiv, [])]


def verdicts_of(entry: Entry, fresh: dict[str, dict[str, float]] | None = None) -> list[Verdict]:
    """Verdicts on the claims of an entry's papers: metrics just measured (`fresh`, by entry name) where given,
    else those the catalogue records."""
    fresh = fresh or {}
    entries = load_catalog()
    return [verdict(c, lambda e: fresh.get(e) or (entries[e].metrics if e in entries else {}))
            for c in claims_of(entry)]


def get(name: str) -> Entry:
    entries = load_catalog()
    if name not in entries:
        raise UnknownCheckpointError(name, difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5))
    return entries[name]


def names(pattern: str = "*", *, task: str | None = None, dataset: str | None = None, tag: str | None = None) -> list[str]:
    out = []
    for n, e in load_catalog().items():
        if not fnmatch.fnmatchcase(n, pattern):
            continue
        if task is not None and e.task != task:
            continue
        if dataset is not None and e.dataset != dataset:
            continue
        if tag is not None and tag not in e.tags:
            continue
        out.append(n)
    return sorted(out)


class _Dumper(yaml.SafeDumper):
    """Block style for entries, flow style for short lists and maps, folded text for long strings."""


def _str(dumper: yaml.SafeDumper, s: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=">" if len(s) > 100 else None)


_Dumper.add_representer(str, _str)


def dump_yaml(doc: Any) -> str:
    """YAML text of a catalogue document; the claims ledger in block style, one field per line, like its authors
    write it."""
    def dump(d: Any, flow: bool | None) -> str:
        return yaml.dump(d, Dumper=_Dumper, sort_keys=False, default_flow_style=flow, width=110, allow_unicode=True)

    if not (isinstance(doc, dict) and "claims" in doc):
        return dump(doc, None)
    rest = {k: v for k, v in doc.items() if k != "claims"}
    return dump(rest, None) + dump({"claims": doc["claims"]}, False)


def update_entry(name: str, path: Path | None = None, **changes: Any) -> Path:
    """Rewrite one entry's fields in the catalogue file, atomically (temp file + rename), holding a lock on its
    folder so that `zoo reproduce` runs side by side cannot overwrite each other's entries."""
    path = (Path(path) if path else catalog_path()).resolve()
    with _locked(path.parent):
        doc = yaml.safe_load(path.read_text()) or {}
        raw = doc.get("checkpoints", {})
        if name not in raw:
            raise UnknownCheckpointError(name, difflib.get_close_matches(name, list(raw), n=3, cutoff=0.5))
        raw[name].update(changes)
        parse_entry(name, raw[name])
        text = HEADER + dump_yaml(doc)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".checkpoints-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive advisory lock on a folder (POSIX flock; a no-op where fcntl is missing, e.g. Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
