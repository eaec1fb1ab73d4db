"""The catalogue contract (torchvision's meta test for checkpoints.yaml): every entry is well formed, names a
registered model, builds from its init_args with the recorded parameter count, and matches its recipe."""
import fnmatch
import importlib
import re
import sys

import pytest
import yaml
from conftest import REPO

import zoo
from zoo import _catalog
from zoo._errors import CatalogError
from zoo._paths import resolve_recipe
from zoo._registry import model_class

ENTRIES = _catalog.load_catalog()


def test_catalogue_is_not_empty_and_names_are_kebab_case():
    assert {"forward-forward-digits", "forward-forward-fmnist"} <= set(ENTRIES)
    assert all(_catalog.NAME.match(n) for n in ENTRIES)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_entry_builds_and_matches_its_recipe(name, monkeypatch):
    from zoo._lightning_cli import ZooCLI

    monkeypatch.setattr(sys, "argv", ["zoo"])  # pytest's own options are not LightningCLI's
    e = ENTRIES[name]
    cls = model_class(e.model)
    cli = ZooCLI(args=["--config", str(resolve_recipe(e.recipe)), "--trainer.logger=false"], run=False)
    assert type(cli.model) is cls
    for k, v in e.init_args.items():
        assert cli.model.hparams[k] == v, f"{k}: recipe {cli.model.hparams[k]!r} vs catalogue {v!r}"
    # the recipe's model has the entry's arguments (above); built from them alone it must be the same network
    model = zoo.create(e.model, **e.init_args) if sum(p.numel() for p in cli.model.parameters()) < 50e6 else cli.model
    if not (e.source and e.num_params is None):  # converted weights: `zoo convert --update-catalog` counts them
        assert e.num_params == sum(p.numel() for p in model.parameters()), "re-run zoo reproduce --update-catalog"
    assert e.head == list(cls.head_keys)
    keys = list(model.state_dict())
    assert all(any(fnmatch.fnmatchcase(k, p) for k in keys) for p in e.head), "head patterns match no key"
    module_path, _, cls_name = e.data["class_path"].rpartition(".")
    assert type(cli.datamodule) is getattr(importlib.import_module(module_path), cls_name)
    for k, v in e.data.get("init_args", {}).items():
        assert getattr(cli.datamodule, k, cli.datamodule.hparams.get(k)) == v, k


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_metrics_are_measured_with_provenance(name):
    e = ENTRIES[name]
    if e.source and not e.metrics:  # official weights not yet evaluated here: nothing of ours may be claimed
        assert not e.reproduced and not e.tolerance and not e.hub
        return
    assert e.metrics, f"{name} has no measured metrics: run zoo reproduce {name} --update-catalog"
    assert e.reproduced and {"command", "wall_time_s", "hardware", "date", "torch", "lightning"} <= set(e.reproduced)
    command = e.reproduced["command"]
    if e.reproduced.get("resumed_from"):  # an interrupted run finished from its own checkpoint: the same recipe
        command = command.replace(f" --ckpt_path={e.reproduced['resumed_from']}", "")
    # where it ran is not part of the recipe: one device of any kind, with or without a progress bar
    command = re.sub(r" --trainer\.(accelerator=\w+|devices=1|enable_progress_bar=(true|false))\b", "", command)
    assert command == f"zoo reproduce {name}", "catalogue numbers come from the unmodified recipe"
    assert set(e.tolerance) <= set(e.metrics)
    if e.baseline:  # the same data and split; how it is batched may differ (EM takes 500 at a time, CD 50)
        assert ENTRIES[e.baseline].dataset == e.dataset and _split(ENTRIES[e.baseline].data) == _split(e.data)


def _split(data: dict) -> dict:
    loader = {"batch_size", "num_workers"}
    return {**data, "init_args": {k: v for k, v in data.get("init_args", {}).items() if k not in loader}}


def test_published_entries_are_pinned():
    for e in ENTRIES.values():
        if e.hub is not None:
            assert _catalog.HEX40.match(e.hub.revision) and _catalog.HEX64.match(e.hub.files["model.safetensors"])


def _raw(**over):
    raw = yaml.safe_load(yaml.safe_dump(ENTRIES["forward-forward-digits"].to_dict()))
    raw.update(over)
    return raw


def test_schema_errors_name_the_entry_and_field():
    with pytest.raises(CatalogError, match=r"unknown field\(s\) 'metircs' \(did you mean 'metrics'\?\)"):
        _catalog.parse_entry("x-y", {**_raw(), "metircs": {}})
    with pytest.raises(CatalogError, match="40-hex commit"):
        _catalog.parse_entry("x-y", _raw(hub={"repo_id": "a/b", "revision": "main", "files": {"model.safetensors": "0" * 64}}))
    with pytest.raises(CatalogError, match="missing required"):
        _catalog.parse_entry("x-y", {k: v for k, v in _raw().items() if k != "recipe"})
    with pytest.raises(CatalogError, match="kebab case"):
        _catalog.parse_entry("Bad_Name", _raw())
    paper = _raw()["paper"]
    with pytest.raises(CatalogError, match="unknown field\\(s\\) in `paper`: 'arxive'"):
        _catalog.parse_entry("x-y", _raw(paper={**paper, "arxive": "1811.06969"}))
    with pytest.raises(CatalogError, match="`paper.also` must be a list of arXiv ids"):
        _catalog.parse_entry("x-y", _raw(paper={**paper, "also": "1811.06969"}))
    assert _catalog.parse_entry("x-y", _raw(paper={**paper, "also": ["1811.06969"]})).paper.also == ("1811.06969",)


def test_papers_named_by_entries_are_in_the_paper_list():
    listed = yaml.safe_load((REPO / "docs" / "papers.yaml").read_text())
    papers = {p.get("arxiv") for p in listed["papers"]} | {c["arxiv"] for c in listed.get("companions") or []}
    assert all(1 <= c["of"] <= 38 for c in listed.get("companions") or [])
    for name, e in ENTRIES.items():
        assert {e.paper.arxiv, *e.paper.also} <= papers, name


def test_baseline_and_requires_must_name_entries(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"schema_version": 1, "checkpoints": {"mine-digits": _raw(baseline=None, requires=["nope"])}}))
    with pytest.raises(CatalogError, match="'nope' \\(baseline or requires\\) is not in the catalogue"):
        _catalog.load_catalog(p)


def test_updates_side_by_side_keep_every_entry(tmp_path):
    # several `zoo reproduce --update-catalog` runs at once: each rewrites the whole file, so without the lock
    # one run's entry could be lost to another's read-modify-write
    from concurrent.futures import ThreadPoolExecutor

    names = [f"mine-{i}-digits" for i in range(8)]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"schema_version": 1, "checkpoints": {n: _raw(baseline=None) for n in names}}))
    with ThreadPoolExecutor(8) as pool:
        measured = {"test/acc": 0.5, "test/acc_linear": 0.25}
        list(pool.map(lambda n: _catalog.update_entry(n, p, metrics=measured, num_params=7), names * 3))
    raw = yaml.safe_load(p.read_text())["checkpoints"]
    assert all(raw[n]["metrics"]["test/acc"] == 0.5 and raw[n]["num_params"] == 7 for n in names)


def test_zoo_catalog_env_replaces_the_catalogue(tmp_path, monkeypatch):
    p = tmp_path / "private.yaml"
    p.write_text(yaml.safe_dump({"schema_version": 1, "checkpoints": {"mine-digits": _raw(baseline=None)}}))
    monkeypatch.setenv("ZOO_CATALOG", str(p))
    assert zoo.list() == ["mine-digits"]
    assert zoo.info("mine-digits").model == "forward_forward"


def test_list_filters():
    assert zoo.list("forward-forward-*", dataset="fashion-mnist") == [
        "forward-forward-fmnist", "forward-forward-fmnist-backprop", "forward-forward-fmnist-localrf",
        "forward-forward-fmnist-localrf-backprop", "forward-forward-fmnist-unsupervised",
        "forward-forward-fmnist-unsupervised-backprop"]
    assert zoo.list(tag="backprop-baseline") == [
        "forward-forward-digits-backprop", "forward-forward-fmnist-backprop", "forward-forward-fmnist-localrf-backprop",
        "forward-forward-fmnist-unsupervised-backprop", "localmixer-bp-fmnist"]
    assert zoo.list(task="image-classification") == sorted(n for n, e in ENTRIES.items()
                                                           if e.task == "image-classification")
    assert zoo.list("nothing-*") == []


def test_models_registry():
    keys = zoo.models()
    assert keys == sorted(keys) and {"cnn", "distilled_mlp", "forward_forward", "mlp", "soft_tree"} <= set(keys)
    assert {e.model for e in ENTRIES.values()} <= set(keys)
    assert "forward_forward" in zoo.models("forward*") and zoo.models("forward*") == sorted(zoo.models("forward*"))
    assert zoo.models("forward*") == [k for k in keys if k.startswith("forward")]
    with pytest.raises(KeyError, match="did you mean|Did you mean"):
        zoo.create("forward_forwrd")
