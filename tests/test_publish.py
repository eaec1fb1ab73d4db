"""`zoo publish` against an in-process double of the Hub's commit API, then a download through the real
client: identical bytes, the catalogue pinned to the commit, and `zoo.load` from the cache bit-exact."""
import json

import huggingface_hub
import pytest
import torch
import yaml
from hub_double import HubDouble
from huggingface_hub.errors import HfHubHTTPError

import zoo
from zoo.cli import main

NAME = "forward-forward-digits"
REPO_ID = "hinton-zoo-test/forward-forward-digits"


@pytest.fixture
def release(catalog_copy, zoo_home):
    torch.manual_seed(0)
    module = zoo.create("forward_forward", **zoo.info(NAME).init_args)
    folder = zoo.save_pretrained(module, zoo_home / "releases" / NAME, metrics={"test/acc": 0.9}, name=NAME)
    return module, folder


@pytest.fixture
def online(monkeypatch):
    # the process runs with HF_HUB_OFFLINE=1; only these tests talk to a server, and it is on loopback
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_publish_then_download_is_identical_and_pinned(release, catalog_copy, online, capsys):
    module, folder = release
    with HubDouble() as hub:
        assert main(["publish", NAME, "--repo-id", REPO_ID, "--endpoint", hub.url, "--token", "test"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert hub.commits == [result["revision"]]  # one commit holds the whole release
        for fname, sha in result["files"].items():
            path = huggingface_hub.hf_hub_download(REPO_ID, fname, revision=result["revision"], endpoint=hub.url)
            assert open(path, "rb").read() == (folder / fname).read_bytes()
            assert sha == zoo._hub.sha256_file(folder / fname)
    entry = yaml.safe_load(catalog_copy.read_text())["checkpoints"][NAME]
    assert entry["hub"] == {"repo_id": REPO_ID, "revision": result["revision"], "files": result["files"]}
    assert zoo.info(NAME).hub.revision == result["revision"]

    huggingface_hub.constants.HF_HUB_OFFLINE = True  # (restored by monkeypatch) the server is gone: cache only
    loaded = zoo.load(NAME)
    assert loaded.zoo_source == f"hf-hub:{REPO_ID}@{result['revision']}"
    for k, v in module.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_failed_publish_changes_nothing(release, catalog_copy, online):
    before = catalog_copy.read_bytes()
    with HubDouble() as hub:
        hub.fail_commit = True
        with pytest.raises(HfHubHTTPError):
            zoo.publish(NAME, REPO_ID, endpoint=hub.url, token="test")
        assert hub.repos[REPO_ID] == {"main": {}}
    assert catalog_copy.read_bytes() == before


def test_incomplete_or_altered_release_is_refused_before_upload(release, online):
    _, folder = release
    (folder / "metrics.json").unlink()
    with HubDouble() as hub:
        with pytest.raises(zoo.CheckpointNotAvailable, match="incomplete"):
            zoo.publish(NAME, REPO_ID, endpoint=hub.url, token="test")
        (folder / "metrics.json").write_text("{}")
        (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:-4])
        with pytest.raises(zoo.ChecksumError):
            zoo.publish(NAME, REPO_ID, endpoint=hub.url, token="test")
        assert hub.repos == {}  # nothing reached the Hub


def test_publish_unknown_name_without_release(zoo_home):
    with pytest.raises(zoo.UnknownCheckpointError):
        zoo.publish("forward-forward-digitz", REPO_ID, endpoint="http://127.0.0.1:9")
    with pytest.raises(zoo.CheckpointNotAvailable, match="zoo reproduce forward-forward-fmnist"):
        zoo.publish("forward-forward-fmnist", REPO_ID, endpoint="http://127.0.0.1:9")
