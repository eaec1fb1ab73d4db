"""Weights: pinned Hub downloads, sha256 checks before any tensor is read, strict loading, releases.

A release folder is exactly what a Hub repo holds: model.safetensors, config.json, metrics.json,
config.yaml, README.md (model card) and any figures. It is written into a temporary sibling folder
and renamed into place, so an interrupted write never leaves a folder that looks complete.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from zoo import _catalog
from zoo._errors import ChecksumError, CheckpointNotAvailable, WeightsMismatchError
from zoo._paths import releases_dir
from zoo._registry import model_class

log = logging.getLogger("zoo")
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_HF_PREFIX = "hf-hub:"
_said_local: set[str] = set()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_verified(path: Path, sha256: str | None, what: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file once, check its bytes against `sha256`, then parse those same bytes."""
    data = path.read_bytes()
    if sha256 is not None:
        actual = sha256_bytes(data)
        if actual != sha256:
            raise ChecksumError(
                f"{what}: sha256 of {path} is {actual}, the pinned value is {sha256}. The file is truncated, "
                "tampered with or from another revision; nothing was loaded. Delete it and download again."
            )
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if not (0 < n <= len(data) - 8 and data[8:9] == b"{"):
        kind = "a pickle/torch.save file" if data[:2] == b"PK" or data[:1] == b"\x80" else "not a safetensors file"
        raise ChecksumError(
            f"{what}: {path} is {kind}. zoo only loads safetensors and never unpickles weight files; "
            "convert trusted weights with safetensors.torch.save_file."
        )
    try:
        return st_load(data)
    except Exception as err:  # safetensors raises its own error type for a malformed header
        raise ChecksumError(f"{what}: {path} is not a valid safetensors file ({err}).") from err


# ----------------------------------------------------------------------------- where weights come from
class _Source:
    """A resolved checkpoint: verified tensors plus what rebuilds the module."""

    def __init__(self, state: dict[str, torch.Tensor], model: str, init_args: dict[str, Any],
                 head: list[str], origin: str, entry: _catalog.Entry | None):
        self.state, self.model, self.init_args = state, model, init_args
        self.head, self.origin, self.entry = head, origin, entry


def _read_config(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointNotAvailable(f"{what}: {path} is missing; a zoo release folder holds {CONFIG} and {WEIGHTS}.")
    cfg = json.loads(path.read_text())
    if "model" not in cfg or "init_args" not in cfg:
        raise ChecksumError(f"{what}: {path} has no `model`/`init_args`; it was not written by zoo.save_pretrained.")
    return cfg


def _from_folder(folder: Path, what: str) -> _Source:
    cfg = _read_config(folder / CONFIG, what)
    weights = folder / WEIGHTS
    if not weights.is_file():
        others = sorted(p.name for p in folder.glob("*") if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"})
        extra = f" It holds {others}: pickle formats are refused; only safetensors is loaded." if others else ""
        raise CheckpointNotAvailable(f"{what}: no {WEIGHTS} in {folder}.{extra}")
    state = read_verified(weights, cfg.get("files", {}).get(WEIGHTS), what)
    return _Source(state, cfg["model"], cfg["init_args"], cfg.get("head", []), str(folder), None)


def _download(repo_id: str, filename: str, revision: str, local_files_only: bool | None, what: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    from zoo import __version__

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=bool(local_files_only),
                                    library_name="hinton-zoo", library_version=__version__))
    except LocalEntryNotFoundError as err:
        raise CheckpointNotAvailable(
            f"{what}: {repo_id}/{filename}@{revision[:12]} is not in the Hugging Face cache and the Hub cannot be "
            "reached (offline: HF_HUB_OFFLINE=1, local_files_only=True, or no network). Run `zoo download NAME` "
            "on a machine with network and copy its cache (HF_HUB_CACHE), or unset HF_HUB_OFFLINE."
        ) from err
    except (EntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise CheckpointNotAvailable(f"{what}: downloading {repo_id}/{filename}@{revision[:12]} failed: {err}") from err


def _require_commit(repo_id: str, revision: str, what: str) -> None:
    if not _catalog.HEX40.match(revision):
        raise ValueError(
            f"{what}: revision {revision!r} is not a 40-hex commit id. zoo only downloads pinned commits; "
            f"find the commit on https://huggingface.co/{repo_id}/commits/main."
        )


def _from_hub(repo_id: str, revision: str, local_files_only: bool | None, what: str) -> _Source:
    """Any zoo release on the Hub: its config.json says how to build the model and pins the weights' sha256."""
    _require_commit(repo_id, revision, what)
    cfg = _read_config(_download(repo_id, CONFIG, revision, local_files_only, what), what)
    weights = _download(repo_id, WEIGHTS, revision, local_files_only, what)
    state = read_verified(weights, cfg.get("files", {}).get(WEIGHTS), what)
    return _Source(state, cfg["model"], cfg["init_args"], cfg.get("head", []), f"hf-hub:{repo_id}@{revision}", None)


def _parse_hf(spec: str) -> tuple[str, str]:
    m = re.fullmatch(r"hf-hub:([\w.-]+/[\w.-]+)@(\S+)", spec)
    if not m:
        raise ValueError(f"{spec!r}: write hf-hub:ORG/REPO@<40-hex commit>; unpinned downloads are refused.")
    return m.group(1), m.group(2)


def resolve(name_or_path: str | os.PathLike, *, revision: str | None = None,
            local_files_only: bool | None = None) -> _Source:
    """Find and verify weights: a local folder, `hf-hub:ORG/REPO@REV`, or a catalogue name (DESIGN.md order)."""
    spec = str(name_or_path)
    if isinstance(name_or_path, os.PathLike) or os.path.isdir(spec):
        return _from_folder(Path(spec), spec)
    if spec.startswith(_HF_PREFIX):
        repo_id, rev = _parse_hf(spec)
        return _from_hub(repo_id, revision or rev, local_files_only, spec)
    if "/" in spec or spec.startswith((".", "~")):
        raise CheckpointNotAvailable(f"{spec}: no such release folder (for the Hub, write hf-hub:ORG/REPO@<commit>)")
    entry = _catalog.get(spec)
    if entry.hub is not None and revision not in (None, entry.hub.revision):
        src = _from_hub(entry.hub.repo_id, revision, local_files_only, spec)  # another commit: its own hashes
    elif entry.hub is not None:  # the pinned commit: only the weights, checked against the catalogue's sha256
        hub = entry.hub
        _require_commit(hub.repo_id, hub.revision, spec)
        path = _download(hub.repo_id, WEIGHTS, hub.revision, local_files_only, spec)
        src = _Source(read_verified(path, hub.files[WEIGHTS], spec), entry.model, entry.init_args, entry.head,
                      f"hf-hub:{hub.repo_id}@{hub.revision}", entry)
    else:
        folder = releases_dir() / spec
        if not (folder / WEIGHTS).is_file() and entry.source is not None:
            src = entry.source
            how = (f"download the official checkpoint ({src['size']}) from {src['url']}, then run `zoo convert {spec} "
                   f"--checkpoint FILE`" if src["framework"] == "pytorch" else
                   f"run `zoo convert {spec}` (needs `pip install 'hinton-zoo[convert]'`; downloads the official "
                   f"checkpoint, {src['size']}, from {src['url']})")
            raise CheckpointNotAvailable(
                f"{spec!r} holds the official weights, converted on your machine: {how}. It saves the release in "
                f"{folder}, which zoo.load then reads.")
        if not (folder / WEIGHTS).is_file():
            cost = ""
            seconds = (entry.reproduced or {}).get("total_time_s") or (entry.reproduced or {}).get("wall_time_s")
            if seconds:
                cost = (f" (about {max(1, round(seconds / 60))} min on "
                        f"{entry.reproduced.get('hardware', 'the recorded machine')})")
            raise CheckpointNotAvailable(
                f"{spec!r} has no published weights yet and there is no local release in {folder}. "
                f"Train it with `zoo reproduce {spec}`{cost}; it saves the release there."
            )
        if spec not in _said_local:
            log.warning("zoo: %s is not published; loading the local release in %s", spec, folder)
            _said_local.add(spec)
        src = _from_folder(folder, spec)
    src.model, src.init_args, src.head, src.entry = entry.model, dict(entry.init_args), entry.head, entry
    return src


# ----------------------------------------------------------------------------- strict loading
def _matches(key: str, patterns: list[str] | tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], drop: list[str] | tuple[str, ...] = ()) -> None:
    """Load `state` into `module`; any missing, unexpected or mis-shaped key is an error listing them all.

    Keys matching `drop` (the head, when `num_classes` changed) keep the module's fresh initialisation.
    """
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not _matches(k, drop)}
    kept = {k for k in own if not _matches(k, drop)}
    missing = sorted(kept - set(state))
    unexpected = sorted(set(state) - set(own))
    sized = set(getattr(module, "data_shaped_keys", ()))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in kept & set(state) if state[k].shape != own[k].shape and k not in sized)
    if missing or unexpected or shapes:
        def fmt(title: str, items: list[str]) -> str:
            more = f" ... and {len(items) - 10} more" if len(items) > 10 else ""
            return f"\n  {title} ({len(items)}): " + ", ".join(items[:10]) + more if items else ""

        raise WeightsMismatchError(
            f"weights do not fit {type(module).__name__}:" + fmt("missing", missing) + fmt("unexpected", unexpected)
            + fmt("wrong shape", shapes)
            + "\nThe checkpoint was made for other init_args or another version of the model."
        )
    own.update(state)
    module.load_state_dict(own, strict=True)


def build(src: _Source, num_classes: int | None) -> tuple[torch.nn.Module, list[str]]:
    cls = model_class(src.model)
    init_args = dict(src.init_args)
    drop: list[str] = []
    if num_classes is not None and num_classes != init_args.get("num_classes"):
        if "num_classes" not in init_args:
            raise ValueError(f"{src.origin}: model {src.model!r} has no num_classes argument to change")
        init_args["num_classes"] = num_classes
        drop = list(src.head or cls.head_keys)
    return cls(**init_args), drop


def load(name_or_path: str | os.PathLike, *, revision: str | None = None, num_classes: int | None = None,
         map_location: str | torch.device = "cpu", local_files_only: bool | None = None) -> torch.nn.Module:
    src = resolve(name_or_path, revision=revision, local_files_only=local_files_only)
    module, drop = build(src, num_classes)
    load_state_strict(module, src.state, drop)
    module.zoo_entry = src.entry
    module.zoo_source = src.origin
    return module.to(map_location).eval()


def load_weights_into(module: torch.nn.Module, weights: str) -> None:
    """Initialise an already built module from a zoo checkpoint (fine-tuning); the head is dropped
    when the module's `num_classes` differs from the checkpoint's."""
    src = resolve(weights)
    drop: list[str] = []
    theirs, ours = src.init_args.get("num_classes"), getattr(module, "hparams", {}).get("num_classes")
    if theirs is not None and ours is not None and theirs != ours:
        drop = list(src.head or type(module).head_keys)
    load_state_strict(module, src.state, drop)


# ----------------------------------------------------------------------------- releases
def _plain_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def _weights_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes of `state` that depend only on its contents: safetensors writes the metadata in the order
    of a Rust hash map, which changes from call to call, so the same weights would get a new sha256 on every save.
    The header is rewritten with the metadata keys sorted (same keys and values, so the same length)."""
    blob = st_save(state, metadata=metadata)
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # cannot happen for the same keys and values; refuse rather than write a broken file
        raise RuntimeError("safetensors header grew when its metadata was sorted")
    return blob[:8] + text.ljust(n) + blob[8 + n:]


def write_release(module: torch.nn.Module, folder: str | os.PathLike, *, metrics: dict[str, float] | None = None,
                  name: str | None = None, config_yaml: str | None = None,
                  extra_files: dict[str, str | os.PathLike] | None = None,
                  card_extra: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None) -> Path:
    """Write a complete release folder atomically: everything goes into a temporary sibling, then one rename.
    `provenance` (converted weights: the source and the sha256 of what was read) goes to provenance.json and the
    card."""
    from zoo import __version__
    from zoo._card import model_card

    folder = Path(folder).expanduser().resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    key = getattr(module, "zoo_key", "") or type(module).__name__
    init_args = module.zoo_init_args() if hasattr(module, "zoo_init_args") else {}
    head = list(getattr(module, "head_keys", ()))
    entry = _catalog.get(name) if name else getattr(module, "zoo_entry", None)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
    try:
        blob = _weights_bytes(_plain_state(module), {"format": "pt", "zoo_model": key, "zoo_version": __version__})
        (tmp / WEIGHTS).write_bytes(blob)
        cfg = {"model": key, "init_args": init_args, "head": head, "zoo_version": __version__,
               "name": entry.name if entry else None, "files": {WEIGHTS: sha256_bytes(blob)}}
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        if config_yaml is None:
            import yaml

            config_yaml = yaml.safe_dump({"model": {"class_path": f"{type(module).__module__}.{type(module).__name__}",
                                                    "init_args": init_args}}, sort_keys=False)
        (tmp / "config.yaml").write_text(config_yaml)
        figures = []
        for fname, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / fname)
            figures.append(fname)
        card_extra = dict(card_extra or {})
        if provenance is not None:
            (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
            card_extra["provenance"] = provenance
        if entry is not None:
            if "claims" not in card_extra:
                card_extra["claims"] = release_verdicts(entry, metrics, card_extra.get("baseline"))
            from zoo._claims import claims_json

            (tmp / "claims.json").write_text(claims_json(card_extra["claims"]))
        model_card(entry=entry, model_key=key, metrics=metrics, num_params=sum(p.numel() for p in module.parameters()),
                   figures=figures, extra=card_extra).save(tmp / "README.md")
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def release_verdicts(entry: _catalog.Entry, metrics: dict[str, float], baseline: dict[str, Any] | None):
    """Verdicts on the claims of a release's papers: its own metrics and its baseline's as just measured, the
    catalogue's for every other entry a check names."""
    fresh = {entry.name: metrics}
    if baseline and baseline.get("metrics"):
        fresh[baseline["name"]] = baseline["metrics"]
    return _catalog.verdicts_of(entry, fresh)


def verify_release(folder: Path) -> dict[str, str]:
    """Check a release folder is complete and its weights match config.json; return {file: sha256}."""
    cfg = _read_config(folder / CONFIG, str(folder))
    missing = [f for f in (WEIGHTS, CONFIG, "README.md", "metrics.json", "config.yaml") if not (folder / f).is_file()]
    if missing:
        raise CheckpointNotAvailable(f"release {folder} is incomplete: {missing} missing; run `zoo reproduce` again.")
    sha = sha256_file(folder / WEIGHTS)
    if sha != cfg.get("files", {}).get(WEIGHTS):
        raise ChecksumError(f"release {folder}: {WEIGHTS} sha256 {sha} does not match config.json")
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def publish(name_or_folder: str | os.PathLike, repo_id: str, *, token: str | None = None,
            endpoint: str | None = None, update_catalog: bool = True) -> dict[str, Any]:
    """Upload a release in one Hub commit, then pin its commit id and hashes in the catalogue entry."""
    from huggingface_hub import CommitOperationAdd, HfApi

    spec = str(name_or_folder)
    folder = Path(spec) if os.path.isdir(spec) else releases_dir() / spec
    if not folder.is_dir():
        _catalog.get(spec)
        raise CheckpointNotAvailable(f"no release for {spec!r} in {folder}; run `zoo reproduce {spec}` first.")
    from zoo._card import refresh_release_claims

    verify_release(folder)  # an incomplete or altered release is refused before anything is rewritten
    refresh_release_claims(folder)  # verdicts as the catalogue stands, not as when the release was written
    files = verify_release(folder)
    name = json.loads((folder / CONFIG).read_text()).get("name")
    api = HfApi(endpoint=endpoint, token=token, library_name="hinton-zoo")
    api.create_repo(repo_id, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files]
    info = api.create_commit(repo_id, ops, commit_message=f"zoo release {name or folder.name}")
    commit = info.oid
    if not _catalog.HEX40.match(commit or ""):
        raise RuntimeError(f"the Hub answered commit id {commit!r}, not a 40-hex sha; the catalogue is unchanged")
    result = {"repo_id": repo_id, "revision": commit, "files": files}
    if update_catalog and name:
        _catalog.update_entry(name, hub=result)
    return result
