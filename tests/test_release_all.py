"""`zoo reproduce --all` and `zoo publish --all` on a two-entry catalogue of tiny backprop MLPs on the bundled
digits (a student that requires its teacher): dependency order, the summary table, --only-missing, resuming after
a failed or interrupted entry without a release that looks complete, then publishing against the Hub double
(tests/hub_double.py, on loopback) with a commit that fails midway, and loading each entry from a fresh cache
through the real client, online and then offline."""
import json
import shutil

import huggingface_hub
import pytest
import torch
import yaml
from conftest import global_state_restored
from hub_double import HubDouble
from safetensors.torch import load_file

import zoo
from zoo import _card, _hub
from zoo.cli import main

TEACHER, STUDENT = "tiny-mlp-teacher", "tiny-mlp-student"
ORG = "hinton-zoo-test"
DATA = {"class_path": "zoo.data.DigitsDataModule",
        "init_args": {"batch_size": 50, "val_size": 180, "test_size": 360, "seed": 0}}


def _recipe(path, hidden):
    path.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "limit_train_batches": 4, "limit_val_batches": 1, "deterministic": True,
                    "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "enable_checkpointing": False},
        "model": {"class_path": "zoo.models.baselines.MLPClassifier",
                  "init_args": {"in_features": 64, "hidden": hidden, "num_classes": 10}},
        "data": DATA}))
    return str(path)


@pytest.fixture
def tiny_catalog(tmp_path, monkeypatch, zoo_home):
    """The student is listed first and sorts first, so only `requires:` puts the teacher before it."""
    def entry(hidden, recipe, **more):
        return {"model": "mlp", "init_args": {"in_features": 64, "hidden": hidden, "num_classes": 10},
                "data": DATA, "recipe": _recipe(tmp_path / recipe, hidden), "task": "image-classification",
                "dataset": "sklearn-digits", "license": "mit", "tolerance": {"test/acc": 0.01},
                "paper": {"arxiv": "1503.02531", "title": "Distilling the Knowledge in a Neural Network",
                          "setting": "tiny test"},
                "reproduced": {"wall_time_s": 2.0, "hardware": "2 CPU cores"}, **more}

    path = tmp_path / "checkpoints.yaml"
    claim = {"id": "tiny-student-within-a-point-of-teacher", "claim": "the student is within a point of the teacher",
             "where": "test", "check": f"{STUDENT}:test/acc > {TEACHER}:test/acc - 1"}
    path.write_text(yaml.safe_dump({"schema_version": 1, "checkpoints": {
        STUDENT: entry([8], "student.yaml", requires=[TEACHER]), TEACHER: entry([16], "teacher.yaml")},
        "claims": {"1503.02531": [claim]}}))
    monkeypatch.setenv("ZOO_CATALOG", str(path))
    return path


def zoo_cli(*args):
    with global_state_restored():
        return main(list(args))


def test_reproduce_all_publish_all_and_load_from_a_fresh_cache(tiny_catalog, zoo_home, tmp_path, monkeypatch,
                                                               capsys):
    assert zoo_cli("reproduce", "--all", "tiny-*", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "2 of 2 entries to train; expected about 0.1 min, the sum of the catalogue's recorded times" in out
    assert not (zoo_home / "releases").exists()

    assert zoo_cli("reproduce", "--all", "tiny-*", "--update-catalog") == 0
    out = capsys.readouterr().out
    assert out.index(f"=== [1/2] {TEACHER}") < out.index(f"=== [2/2] {STUDENT}")
    summary = out[out.index("entry  "):]
    assert "measured vs catalogue" in summary and "claims held" in summary
    assert summary.count("ok, catalogue updated") == 2
    doc = yaml.safe_load(tiny_catalog.read_text())["checkpoints"]
    for name in (TEACHER, STUDENT):
        assert doc[name]["metrics"] == json.loads((zoo_home / "releases" / name / "metrics.json").read_text())
    assert not (zoo_home / "reproduce-all.json").exists()  # finished: nothing to resume
    # the teacher's release was written before the student was measured: its verdict is stale until publishing
    stale = json.loads((zoo_home / "releases" / TEACHER / "claims.json").read_text())
    assert [c["verdict"] for c in stale] == ["not measured"]
    copy = tmp_path / "teacher-copy"  # what `zoo publish NAME` does first, on a copy (publish --all is tested below)
    shutil.copytree(zoo_home / "releases" / TEACHER, copy)
    _card.refresh_release_claims(copy)
    assert [c["verdict"] for c in json.loads((copy / "claims.json").read_text())] == ["holds"]
    assert "**holds**" in (copy / "README.md").read_text()

    assert zoo_cli("reproduce", "--all", "tiny-*", "--only-missing") == 0
    out = capsys.readouterr().out
    assert "0 of 2 entries to train" in out and "===" not in out
    assert out.count("skipped: release matches the catalogue") == 2 and "yes" in out

    before = tiny_catalog.read_bytes()
    assert zoo_cli("publish", "--all", "--org", ORG, "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"{ORG}/{TEACHER}" in out and "2 of 2 releases to upload" in out and " MB" in out
    assert tiny_catalog.read_bytes() == before

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the double is on loopback
    with HubDouble() as hub:
        real_commit = huggingface_hub.HfApi.create_commit

        def fail_after_first(self, *args, **kwargs):
            info = real_commit(self, *args, **kwargs)
            hub.fail_commit = True  # the Hub goes down after the first commit
            return info

        monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", fail_after_first)
        assert zoo_cli("publish", "--all", "--org", ORG, "--endpoint", hub.url, "--token", "test") == 1
        assert "FAILED, the catalogue is unchanged for it" in capsys.readouterr().out
        pinned = {n: e.get("hub") for n, e in yaml.safe_load(tiny_catalog.read_text())["checkpoints"].items()}
        first = STUDENT  # releases go in name order
        assert pinned[TEACHER] is None and pinned[first]["revision"] == hub.commits[0] and len(hub.commits) == 1

        monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", real_commit)
        hub.fail_commit = False
        assert zoo_cli("publish", "--all", "--org", ORG, "--endpoint", hub.url, "--token", "test") == 0
        out = capsys.readouterr().out
        assert "1 of 2 releases to upload" in out and len(hub.commits) == 2  # the committed one is not sent again
        assert {u for u in hub.repos} == {f"{ORG}/{TEACHER}", f"{ORG}/{STUDENT}"}
        card = hub.repos[f"{ORG}/{TEACHER}"]["main"]["README.md"].decode()
        assert f"[{STUDENT}](https://huggingface.co/{ORG}/{STUDENT})" in card  # the same paper's other entry
        assert "## Other checkpoints of this paper" in card and "arxiv.org/abs/1503.02531" in card
        # published with the verdicts as the catalogue stands, in the card and in claims.json
        assert "**holds**" in card and "**not measured**" not in card
        published = json.loads(hub.repos[f"{ORG}/{TEACHER}"]["main"]["claims.json"])
        assert [c["verdict"] for c in published] == ["holds"]

        # a user of this Hub sets HF_ENDPOINT, which huggingface_hub turns into these two at import
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "fresh-cache"))
        for name in (TEACHER, STUDENT):
            pin = zoo.info(name).hub
            assert pin.repo_id == f"{ORG}/{name}" and pin.revision in hub.commits
            folder = zoo_home / "releases" / name
            assert pin.files == {p.name: _hub.sha256_file(p) for p in folder.iterdir()}
            model = zoo.load(name)  # downloaded through huggingface_hub, sha256 checked against the pin
            assert model.zoo_source == f"hf-hub:{ORG}/{name}@{pin.revision}"
            released = load_file(folder / "model.safetensors")
            assert all(torch.equal(v, released[k]) for k, v in model.state_dict().items())
    huggingface_hub.constants.HF_HUB_OFFLINE = True  # (put back by monkeypatch) the server is gone
    for name in (TEACHER, STUDENT):
        assert zoo.load(name).zoo_source.startswith(f"hf-hub:{ORG}/{name}@")


def test_failed_or_interrupted_entry_leaves_no_release_and_a_rerun_resumes(tiny_catalog, zoo_home, monkeypatch,
                                                                           capsys):
    from zoo import _card

    card = _card.model_card
    releases = zoo_home / "releases"

    def crash_writing(error):
        def model_card(*, entry, **kw):  # fails after the weights went into the release's temporary folder
            if entry.name == STUDENT:
                raise error
            return card(entry=entry, **kw)
        return model_card

    monkeypatch.setattr(_card, "model_card", crash_writing(RuntimeError("disk full")))
    assert zoo_cli("reproduce", "--all", "tiny-*") == 1
    out = capsys.readouterr().out
    assert "FAILED: RuntimeError: disk full" in out and "Run the same command again to retry" in out
    assert (releases / TEACHER / "model.safetensors").is_file()
    assert sorted(p.name for p in releases.iterdir()) == [TEACHER]  # no student folder, no hidden leftovers
    teacher_written = (releases / TEACHER / "model.safetensors").stat().st_mtime_ns

    monkeypatch.setattr(_card, "model_card", crash_writing(KeyboardInterrupt()))
    assert zoo_cli("reproduce", "--all", "tiny-*") == 130
    out = capsys.readouterr().out
    assert "resuming an interrupted run" in out and f"=== [1/2] {TEACHER}" not in out
    assert "Run the same command again to resume" in out
    assert sorted(p.name for p in releases.iterdir()) == [TEACHER]

    leftover = releases / f".{STUDENT}.partial-killed"  # what SIGKILL inside write_release would leave
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    monkeypatch.setattr(_card, "model_card", card)
    assert zoo_cli("reproduce", "--all", "tiny-*") == 0
    out = capsys.readouterr().out
    assert f"=== [1/2] {TEACHER}" not in out and f"=== [2/2] {STUDENT}" in out
    assert "(earlier run)" in out.split("measured vs catalogue")[-1]
    assert (releases / TEACHER / "model.safetensors").stat().st_mtime_ns == teacher_written
    assert sorted(p.name for p in releases.iterdir()) == [STUDENT, TEACHER]
    assert _hub.verify_release(releases / STUDENT)
    assert not (zoo_home / "reproduce-all.json").exists()


def test_publish_all_refuses_a_damaged_release_and_publishes_the_rest(tiny_catalog, zoo_home, monkeypatch, capsys):
    for name, hidden in ((TEACHER, [16]), (STUDENT, [8])):
        torch.manual_seed(0)
        module = zoo.create("mlp", in_features=64, hidden=hidden, num_classes=10)
        zoo.save_pretrained(module, zoo_home / "releases" / name, metrics={"test/acc": 0.5}, name=name)
    teacher_card = zoo_home / "releases" / TEACHER / "README.md"
    old_card = teacher_card.read_text().replace(_card_section(teacher_card.read_text()), "")
    teacher_card.write_text(old_card)  # a card written before cards linked the paper's other entries
    (zoo_home / "releases" / STUDENT / "metrics.json").unlink()

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with HubDouble() as hub:
        assert zoo_cli("publish", "--all", "--org", ORG, "--endpoint", hub.url, "--token", "test") == 1
        out = capsys.readouterr().out
        assert f"{STUDENT}: refused, run `zoo reproduce {STUDENT}` again" in out and "incomplete" in out
        assert "1 of 2 releases to upload" in out
        assert list(hub.repos) == [f"{ORG}/{TEACHER}"]
        card = hub.repos[f"{ORG}/{TEACHER}"]["main"]["README.md"].decode()
        assert card.count("## Other checkpoints of this paper") == 1 and f"- `{STUDENT}` (not published yet)" in card
    pinned = {n: e.get("hub") for n, e in yaml.safe_load(tiny_catalog.read_text())["checkpoints"].items()}
    assert pinned[STUDENT] is None and pinned[TEACHER]["revision"] == hub.commits[0]


def _card_section(card: str) -> str:
    from zoo._card import SAME_PAPER_BEGIN, SAME_PAPER_END

    return card[card.index(SAME_PAPER_BEGIN):card.index(SAME_PAPER_END) + len(SAME_PAPER_END)]


def test_recorded_seconds_count_the_entry_alone_not_the_baseline_its_command_trained_first():
    from dataclasses import replace

    from zoo._catalog import Entry, PaperRef
    from zoo._release_all import recorded_seconds

    paper = PaperRef(arxiv="1503.02531", title="t", setting="s")
    base = Entry("b", "mlp", {}, {}, "r.yaml", "t", "d", paper, "mit", reproduced={"wall_time_s": 100.0})
    legacy = replace(base, name="a", baseline="b", reproduced={"wall_time_s": 50.0, "total_time_s": 160.0})
    entries = {"a": legacy, "b": base}
    assert recorded_seconds(legacy, entries) == 60.0  # 110 s beyond its fit: the baseline's 100 s fit ran inside
    assert recorded_seconds(legacy) == 160.0  # without the catalogue there is nothing to take off
    alone = replace(legacy, reproduced={"wall_time_s": 50.0, "total_time_s": 58.0})  # run with --no-baseline
    assert recorded_seconds(alone, entries) == 58.0
    recorded = replace(legacy, reproduced={"wall_time_s": 50.0, "total_time_s": 160.0, "own_time_s": 57.0})
    assert recorded_seconds(recorded, entries) == 57.0
    assert recorded_seconds(base, entries) == 100.0  # only the fit recorded
