"""Weights: release round trip, the Hugging Face cache in its real layout (offline), checksums, pickles,
strict loading, head replacement, and the errors users see."""
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import save_file

import zoo
from zoo import _hub
from zoo._errors import WeightsMismatchError

TINY = {"in_features": 64, "hidden": [16, 12], "num_classes": 10}
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return zoo.create("forward_forward", **TINY)


def states_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def write_catalog(path: Path, hub: dict | None = None) -> Path:
    entry = {
        "model": "forward_forward", "init_args": TINY,
        "data": {"class_path": "zoo.data.DigitsDataModule", "init_args": {}},
        "recipe": "configs/forward_forward/digits.yaml", "task": "image-classification", "dataset": "sklearn-digits",
        "paper": {"arxiv": "2212.13345", "title": "FF", "setting": "test"}, "license": "mit",
        "head": ["classifier.*"], "hub": hub,
        "reproduced": {"wall_time_s": 600, "hardware": "2 CPU cores"},
    }
    path.write_text(yaml.safe_dump({"schema_version": 1, "checkpoints": {"tiny-ff": entry}}))
    return path


def seed_cache(repo_id: str, commit: str, files: dict[str, bytes]) -> Path:
    """Lay files out exactly as huggingface_hub's cache does: blobs, snapshots/<commit> symlinks, refs/main."""
    root = Path(os.environ["HF_HUB_CACHE"]) / ("models--" + repo_id.replace("/", "--"))
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        etag = hashlib.sha256(data).hexdigest()
        (root / "blobs" / etag).write_bytes(data)
        link = snap / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(root / "blobs" / etag, snap))
    return root


@pytest.fixture
def release(tmp_path):
    m = tiny()
    folder = zoo.save_pretrained(m, tmp_path / "rel", metrics={"test/acc": 0.5})
    return m, folder


def test_release_round_trip_is_bit_exact(release):
    m, folder = release
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "config.yaml",
                                                       "metrics.json", "model.safetensors"]
    loaded = zoo.load(folder)
    assert not loaded.training and states_equal(m, loaded)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(m.eval()(x), loaded(x))
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model"] == "forward_forward" and cfg["init_args"]["hidden"] == [16, 12]
    assert cfg["files"]["model.safetensors"] == _hub.sha256_file(folder / "model.safetensors")
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "hinton-zoo"
    assert card.data.eval_results[0].metric_value == 0.5


def test_same_weights_give_the_same_file(tmp_path):
    # safetensors writes its metadata in a Rust hash map's order, which changes between saves; the zoo sorts it,
    # so re-training to the same weights re-creates the same sha256 (and a release can be checked against another)
    m = tiny()
    digests = {_hub.sha256_file(zoo.save_pretrained(m, tmp_path / f"r{i}") / "model.safetensors") for i in range(8)}
    assert len(digests) == 1
    assert states_equal(m, zoo.load(tmp_path / "r0"))


def test_catalogue_name_loads_from_seeded_cache_offline(tmp_path, monkeypatch, release):
    m, folder = release
    blob = (folder / "model.safetensors").read_bytes()
    seed_cache("hinton-zoo/tiny-ff", COMMIT, {"model.safetensors": blob})  # the catalogue says how to build it
    hub = {"repo_id": "hinton-zoo/tiny-ff", "revision": COMMIT, "files": {"model.safetensors": hashlib.sha256(blob).hexdigest()}}
    monkeypatch.setenv("ZOO_CATALOG", str(write_catalog(tmp_path / "c.yaml", hub)))
    loaded = zoo.load("tiny-ff")
    assert states_equal(m, loaded) and loaded.zoo_entry.name == "tiny-ff"
    assert loaded.zoo_source == f"hf-hub:hinton-zoo/tiny-ff@{COMMIT}"
    from zoo.cli import main

    assert main(["download", "tiny-ff"]) == 0  # the `zoo download` command verifies the same file


def test_tampered_or_truncated_cached_file_is_refused(tmp_path, monkeypatch, release):
    _, folder = release
    blob = (folder / "model.safetensors").read_bytes()
    hub = {"repo_id": "hinton-zoo/tampered", "revision": COMMIT, "files": {"model.safetensors": hashlib.sha256(blob).hexdigest()}}
    monkeypatch.setenv("ZOO_CATALOG", str(write_catalog(tmp_path / "c.yaml", hub)))
    cfg = (folder / "config.json").read_bytes()
    tampered = bytearray(blob)
    tampered[-1] ^= 0xFF
    seed_cache("hinton-zoo/tampered", COMMIT, {"model.safetensors": bytes(tampered), "config.json": cfg})
    with pytest.raises(zoo.ChecksumError, match="sha256"):
        zoo.load("tiny-ff")
    seed_cache("hinton-zoo/tampered", COMMIT, {"model.safetensors": blob[: len(blob) // 2], "config.json": cfg})
    with pytest.raises(zoo.ChecksumError, match="truncated"):
        zoo.load("tiny-ff")


def test_uncached_revision_without_network_is_a_clear_error(tmp_path, monkeypatch):
    hub = {"repo_id": "hinton-zoo/never-cached", "revision": OTHER_COMMIT, "files": {"model.safetensors": "0" * 64}}
    monkeypatch.setenv("ZOO_CATALOG", str(write_catalog(tmp_path / "c.yaml", hub)))
    with pytest.raises(zoo.CheckpointNotAvailable, match="HF_HUB_OFFLINE") as err:
        zoo.load("tiny-ff")
    assert "zoo download" in str(err.value)


def test_pickle_files_are_refused(tmp_path, release):
    _, folder = release
    bad = tmp_path / "pickled"
    bad.mkdir()
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("files")
    (bad / "config.json").write_text(json.dumps(cfg))
    torch.save(tiny().state_dict(), bad / "model.safetensors")
    with pytest.raises(zoo.ChecksumError, match="pickle"):
        zoo.load(bad)
    (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    with pytest.raises(zoo.CheckpointNotAvailable, match="pickle formats are refused"):
        zoo.load(bad)


def test_unpublished_entry_without_release_names_reproduce(tmp_path, monkeypatch, zoo_home):
    monkeypatch.setenv("ZOO_CATALOG", str(write_catalog(tmp_path / "c.yaml")))
    with pytest.raises(zoo.CheckpointNotAvailable, match=r"zoo reproduce tiny-ff.*about 10 min"):
        zoo.load("tiny-ff")


def test_unpublished_entry_loads_local_release(tmp_path, monkeypatch, zoo_home, caplog):
    monkeypatch.setenv("ZOO_CATALOG", str(write_catalog(tmp_path / "c.yaml")))
    m = tiny(1)
    zoo.save_pretrained(m, zoo_home / "releases" / "tiny-ff", name="tiny-ff")
    loaded = zoo.load("tiny-ff")
    assert states_equal(m, loaded)
    assert "not published" in caplog.text
    (zoo_home / "releases" / "tiny-ff" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(zoo.ChecksumError):
        zoo.load("tiny-ff")


def test_num_classes_builds_a_fresh_head(release):
    m, folder = release
    new = zoo.load(folder, num_classes=3)
    assert new.classifier.weight.shape == (3, 12) and new.hparams.num_classes == 3
    for k, v in m.state_dict().items():
        if not k.startswith("classifier."):
            assert torch.equal(v, new.state_dict()[k]), k


def test_strict_loading_lists_every_bad_key(tmp_path, release):
    _, folder = release
    state = tiny().state_dict()
    state.pop("net.layers.0.bias")
    state["extra.weight"] = torch.zeros(1)
    state["classifier.weight"] = torch.zeros(10, 5)
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(state, bad / "model.safetensors")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("files")
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsMismatchError) as err:
        zoo.load(bad)
    msg = str(err.value)
    assert "missing (1): net.layers.0.bias" in msg and "unexpected (1): extra.weight" in msg
    assert "classifier.weight: file (10, 5) vs model (10, 12)" in msg


def test_hf_hub_spec_must_be_pinned():
    with pytest.raises(ValueError, match="40-hex"):
        zoo.load("hf-hub:org/repo@main")
    with pytest.raises(ValueError, match="hf-hub:ORG/REPO@"):
        zoo.load("hf-hub:org/repo")


def test_missing_folder_is_not_mistaken_for_a_name(tmp_path):
    with pytest.raises(zoo.CheckpointNotAvailable, match="no such release folder"):
        zoo.load(str(tmp_path / "nothing-here"))


def test_unknown_name_suggests_close_ones():
    with pytest.raises(zoo.UnknownCheckpointError) as err:
        zoo.load("forward-forward-digit")
    assert isinstance(err.value, KeyError)
    assert "forward-forward-digits" in str(err.value) and err.value.suggestions[0] == "forward-forward-digits"


def test_weights_init_arg_fine_tunes_from_a_release(release):
    m, folder = release
    same = zoo.create("forward_forward", **TINY, weights=str(folder))
    assert states_equal(m, same) and "weights" not in same.hparams
    other = zoo.create("forward_forward", **{**TINY, "num_classes": 4}, weights=str(folder))
    assert other.classifier.weight.shape == (4, 12)
    assert torch.equal(other.net.layers[1].weight, m.net.layers[1].weight)


def test_failed_release_write_leaves_nothing_that_looks_complete(tmp_path, monkeypatch, release):
    m, folder = release
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(**kw):
        raise OSError("disk full")

    monkeypatch.setattr("zoo._card.model_card", broken)
    with pytest.raises(OSError, match="disk full"):
        zoo.save_pretrained(tiny(5), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the old release is untouched
    with pytest.raises(OSError):
        zoo.save_pretrained(m, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]  # no partial folder left behind


def test_card_shows_pictures_and_links_other_files(tmp_path):
    from zoo._hub import write_release

    (tmp_path / "curve.png").write_bytes(b"\x89PNG\r\n")
    (tmp_path / "vocabulary.json").write_text("{}")
    folder = write_release(tiny(), tmp_path / "rel", metrics={"test/acc": 0.5},
                           extra_files={"curve.png": tmp_path / "curve.png",
                                        "vocabulary.json": tmp_path / "vocabulary.json"})
    card = (folder / "README.md").read_text()
    assert "![curve.png](curve.png)" in card and "![vocabulary.json]" not in card
    assert "[`vocabulary.json`](vocabulary.json)" in card
