"""The per-paper checklist (tests/papers.py): every registered model and every paper the catalogue cites has a
record; each record names existing tests for the math, the shapes, overfitting and the release round trip; its
recipes run `zoo fit --trainer.fast_dev_run` in process on fixture data, and take DDP steps on 2 CPU processes in one
launch shared by all papers, where the ranks' weights stay identical and move."""
import ast
from functools import cache

import pytest
import torch
import yaml
from conftest import REPO, ddp_result, fit_args, zoo_in_process
import papers
from papers import CHECKLIST, PAPERS, Paper

import zoo._registry as registry


@cache
def _tests_in(file: str) -> set[str]:
    path = REPO / "tests" / file
    if not path.exists():
        return set()
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_registered_model_has_exactly_one_record():
    owner = {}
    for paper in PAPERS:
        for key in paper.keys:
            assert key not in owner, f"{key} is in the records of {owner[key]} and {paper.package}"
            owner[key] = paper.package
    keys = registry.model_keys()
    assert sorted(owner) == keys, f"no record: {sorted(set(keys) - set(owner))}; not registered: {sorted(set(owner) - set(keys))}"
    for key in keys:
        package = registry.model_class(key).__module__.split(".")[2]
        assert owner[key] == package, f"{key} is registered by zoo.models.{package}, recorded under {owner[key]}"


def test_every_catalogue_paper_has_a_record_with_entries():
    entries = yaml.safe_load((REPO / "checkpoints.yaml").read_text())["checkpoints"]
    cited = {e["paper"]["arxiv"] for e in entries.values() if e.get("paper")}
    recorded = {a for p in PAPERS for a in (p.arxiv, *p.more_arxiv) if a}
    assert cited <= recorded, f"catalogue papers without a record in tests/papers.py: {sorted(cited - recorded)}"
    assert recorded <= cited, f"records whose paper has no catalogue entry: {sorted(recorded - cited)}"


@pytest.mark.parametrize("paper", PAPERS, ids=lambda p: p.package)
def test_record_names_tests_that_exist(paper: Paper):
    for item in CHECKLIST:
        named = getattr(paper, item)
        assert named or item in paper.gaps, f"{paper.package}: name its {item} test(s), or say in gaps why there is none"
        for ref in (*named, *paper.extra_ddp_tests):
            file, _, test = ref.partition("::")
            assert test in _tests_in(file), f"{paper.package}: {ref} does not exist"
    assert paper.fit and paper.ddp, f"{paper.package}: give at least one fast_dev_run and one DDP run"
    for run in (*paper.fit, *paper.ddp):
        assert (REPO / run.recipe).is_file(), run.recipe


def test_gaps_are_listed():
    """Checklist items without a test are allowed only with a reason, and they are printed, not hidden."""
    gaps = [f"{p.package}: {item}: {why}" for p in PAPERS for item, why in p.gaps.items()]
    assert all(item in CHECKLIST for p in PAPERS for item in p.gaps)
    if gaps:
        pytest.skip("checklist gaps: " + "; ".join(gaps))


FIT = [pytest.param(paper, run, id=run.label(paper.package)) for paper in PAPERS for run in paper.fit]


@pytest.mark.parametrize(("paper", "run"), FIT)
def test_fast_dev_run_in_process(paper, run, paper_context, idx_dir, tmp_path):
    fill = {**paper_context, "root": tmp_path}
    cli = zoo_in_process(*fit_args(run.recipe, idx_dir if run.data == "idx" else None, tmp_path,
                                   *(a.format(**fill) for a in run.args), "--trainer.fast_dev_run=2"))
    assert cli.trainer.fast_dev_run == 2 and cli.trainer.state.finished
    assert type(cli.model).zoo_key in registry.model_keys()  # its own model, or a baseline its paper compares with
    assert cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2


RUNS = papers.ddp_runs()


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, NaN equal to NaN (an unset threshold is NaN on every rank)."""
    return a.shape == b.shape and a.dtype == b.dtype and bool(((a == b) | (a.isnan() & b.isnan())).all()
                                                               if a.is_floating_point() else torch.equal(a, b))
DDP = [pytest.param(name, id=name) for name in RUNS]


@pytest.mark.parametrize("name", DDP)
def test_ddp_step(name, ddp_runs):
    paper, run = RUNS[name]
    r = ddp_result(ddp_runs, name)
    assert r.ranks[0]["key"] in registry.model_keys()
    if run.steps is not None:
        assert r.ckpt["global_step"] == run.steps == r.ranks[0]["global_step"] == r.ranks[1]["global_step"]
    before, after, other = r.ranks[0]["initial"], r.ranks[0]["final"], r.ranks[1]["final"]
    assert after.keys() == other.keys() == r.ckpt["state_dict"].keys()
    for k in after:
        assert same(after[k], other[k]), f"{k} differs between the ranks after the DDP steps"
    if run.moves:
        moved = [k for k in after if after[k].is_floating_point() and not same(before[k], after[k])]
        assert moved, "no weight changed: the DDP steps did not train"
    if run.check:
        run.check(r)


def test_ddp_launch_steps_every_registered_model(ddp_runs):
    stepped = {r.ranks[0]["key"] for r in ddp_runs.values() if hasattr(r, "ranks")}
    missing = sorted(set(registry.model_keys()) - stepped)
    assert not missing, f"no DDP run (or only failed ones) for {missing}; add one to its record in tests/papers.py"
