"""Test setup. huggingface_hub reads HF_HUB_OFFLINE, HF_ENDPOINT and HF_HUB_CACHE at import, so they are
set here, before anything imports it. ZOO_HOME points at a temporary folder for the whole session."""
import os
import tempfile

_SESSION = tempfile.mkdtemp(prefix="zoo-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = os.path.join(_SESSION, "hf-cache")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["ZOO_HOME"] = os.path.join(_SESSION, "zoo-home")
os.environ.pop("ZOO_CATALOG", None)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 runs two workers on the two cores: one thread each (and in every process they start), or the
    # two torch thread pools fight over the cores and both run several times slower.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

import contextlib  # noqa: E402
import gzip  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write an unsigned-byte IDX file: magic 0,0,0x08,ndim; big-endian sizes; raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def digits_as_28x28(n_train: int, n_test: int) -> tuple[np.ndarray, ...]:
    """Real handwritten digits (sklearn's 8x8 set) drawn 3x larger on a 28x28 canvas, as 0..255 bytes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.kron(d.images, np.ones((3, 3))) * (255.0 / 16.0)
    canvas = np.zeros((len(img), 28, 28))
    canvas[:, 2:26, 2:26] = img
    x, y = canvas.round().astype(np.uint8), d.target.astype(np.uint8)
    return x[:n_train], y[:n_train], x[n_train:n_train + n_test], y[n_train:n_train + n_test]


#: the files whose tests read the shared DDP launch (`ddp_runs`): one group, so that the launch runs once
_DDP_FILES = ("tests/test_checklist.py", "tests/test_ddp.py", "tests/test_dmfa.py")
#: groups handed out first, longest first, so that the two workers end together rather than one waiting on a long
#: group started last
_LONGEST_FIRST = ("ddp", "tests/test_reproduce.py", "tests/test_catalog.py")


def _group(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "ddp" if path in _DDP_FILES else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """For `pytest -n 2` (README): whole groups to a worker: each file (its module fixtures built once), and the
    files reading the shared DDP launch together (the launch runs once). xdist's own `--dist loadgroup` cannot do
    this from marks under pytest 9.2, which ignores the test ids it rewrites."""
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return Groups(config, log)


def pytest_collection_modifyitems(items):
    """The longest groups first (`_LONGEST_FIRST`); a test that reads the DDP launch outside `_DDP_FILES` is an
    error, since its worker would launch it a second time."""
    stray = [i.nodeid for i in items if "ddp_runs" in i.fixturenames and _group(i.nodeid) != "ddp"]
    if stray:
        raise pytest.UsageError(f"tests reading ddp_runs outside tests/conftest.py's _DDP_FILES: {stray}")
    rank = {g: i for i, g in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item.nodeid), len(rank)))


@pytest.fixture(scope="session", autouse=True)
def repo_stays_clean():
    """No test may leave files in the source tree (a run without default_root_dir writes config.yaml there)."""
    def untracked() -> set[str]:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                             capture_output=True, text=True)
        return set(out.stdout.splitlines()) if out.returncode == 0 else set()

    before = untracked()
    yield
    left = untracked() - before
    assert not left, f"tests left files in the repository: {sorted(left)}"


@pytest.fixture
def one_thread():
    """Tiny models: BLAS threads only add synchronisation (which stalls on a busy machine); use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
    """A tiny dataset in the real Fashion-MNIST/MNIST file layout: 240 train and 40 test images."""
    root = tmp_path_factory.mktemp("idx")
    tx, ty, sx, sy = digits_as_28x28(240, 40)
    write_idx(root / "train-images-idx3-ubyte", tx)
    write_idx(root / "train-labels-idx1-ubyte", ty)
    write_idx(root / "t10k-images-idx3-ubyte", sx)
    write_idx(root / "t10k-labels-idx1-ubyte", sy)
    return root


@pytest.fixture
def catalog_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of the catalogue, selected through ZOO_CATALOG, for tests that write to it."""
    path = tmp_path / "checkpoints.yaml"
    shutil.copyfile(REPO / "checkpoints.yaml", path)
    monkeypatch.setenv("ZOO_CATALOG", str(path))
    return path


@contextlib.contextmanager
def zoo_home_at(path: Path):
    """$ZOO_HOME set to `path` for a block (module-scoped fixtures, which cannot use monkeypatch), then restored."""
    old = os.environ.get("ZOO_HOME")
    os.environ["ZOO_HOME"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("ZOO_HOME")
        else:
            os.environ["ZOO_HOME"] = old


@pytest.fixture
def zoo_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "zoo-home"
    monkeypatch.setenv("ZOO_HOME", str(home))
    return home


def run_zoo(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run the `zoo` command in a fresh interpreter, as a user would."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", *args], env=full_env, cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"zoo {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def fit_args(recipe: str, idx_dir: Path | None, root: Path, *extra: str) -> list[str]:
    """`zoo fit` arguments for a recipe on the fixture IDX files (idx_dir=None: the recipe's own data)."""
    data = [f"--data.init_args.data_dir={idx_dir}", "--data.init_args.val_size=40"] if idx_dir else []
    return ["fit", "--config", recipe, *data, "--trainer.enable_progress_bar=false", "--trainer.logger=false",
            f"--trainer.default_root_dir={root}", *extra]


@contextlib.contextmanager
def global_state_restored():
    """Put back what a Trainer run changes globally (seeded RNGs, PL_GLOBAL_SEED and other environment variables,
    deterministic mode, thread count, default dtype, matmul precision, working directory, sys.argv), so a run in
    this process cannot leak into the next test."""
    import random

    import torch

    env, cwd, argv = dict(os.environ), os.getcwd(), sys.argv
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.get_num_threads(), torch.get_default_dtype(), torch.get_float32_matmul_precision())
    try:
        yield
    finally:
        sys.argv = argv
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.set_num_threads(flags[2])
        torch.set_default_dtype(flags[3])
        torch.set_float32_matmul_precision(flags[4])


def zoo_in_process(*args: str):
    """`zoo fit|validate|test ...` through ZooCLI in this process (what `zoo.cli.main` runs), from the repository
    folder, returning the CLI object; global state is put back afterwards (`global_state_restored`)."""
    from zoo._lightning_cli import ZooCLI

    with global_state_restored():
        os.chdir(REPO)
        sys.argv = ["zoo"]  # LightningCLI warns when pytest's own arguments sit beside args=
        return ZooCLI(args=list(args))


DDP_OVERLAY = ("--config", "configs/strategies/ddp.yaml", "--trainer.accelerator=cpu", "--trainer.devices=2",
               "--trainer.max_steps=2")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def paper_context(tmp_path_factory, idx_dir, teacher_release) -> dict[str, str]:
    """Values of the placeholders in tests/papers.py's run arguments (fixture data, small releases)."""
    import papers

    return papers.context(idx_dir, teacher_release, tmp_path_factory.mktemp("paper-context"))


@pytest.fixture(scope="session")
def ddp_runs(tmp_path_factory, paper_context) -> dict:
    """Every record's DDP runs (tests/papers.py), in ONE launch of two CPU processes that share a gloo process
    group (tests/_ddp_all.py): name -> papers.DDPResult, or the error text of a run that failed."""
    import json
    import time

    import torch

    import papers

    base = tmp_path_factory.mktemp("ddp")
    context = paper_context
    jobs = []
    for name, (_, run) in papers.ddp_runs().items():
        root = base / name
        root.mkdir()
        fill = {**context, "root": str(root)}
        data = [a.format(**fill) for a in papers.IDX] if run.data == "idx" else []
        argv = ["--config", run.recipe, *DDP_OVERLAY, *data, "--trainer.enable_progress_bar=false",
                "--trainer.logger=false", *(a.format(**fill) for a in run.args)]
        jobs.append({"name": name, "root": str(root), "argv": argv})
    spec = base / "spec.json"
    spec.write_text(json.dumps({"timeout_s": 120, "jobs": jobs}, indent=1))
    port, procs, logs = _free_port(), [], []
    for rank in range(2):
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
               "GROUP_RANK": "0", "NODE_RANK": "0", "TORCHELASTIC_RUN_ID": "zoo-tests",
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        logs.append(open(base / f"rank{rank}.log", "w"))
        procs.append(subprocess.Popen([sys.executable, str(REPO / "tests" / "_ddp_all.py"), str(spec)], cwd=REPO,
                                      env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
    start = time.perf_counter()
    try:
        codes = [p.wait(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
    tail = "\n".join(f"--- rank{r}.log\n" + (base / f"rank{r}.log").read_text()[-4000:] for r in range(2))
    results: dict = {"_seconds": time.perf_counter() - start, "_codes": codes, "_log": tail}
    for job in jobs:
        root = Path(job["root"])
        errors = [(root / f"rank{r}.error").read_text() for r in range(2) if (root / f"rank{r}.error").exists()]
        have = all((root / f"rank{r}.pt").exists() for r in range(2)) and (root / "checkpoints" / "last.ckpt").exists()
        if errors or not have:
            results[job["name"]] = "\n".join(errors) or f"no result (exit codes {codes})\n{tail}"
            continue
        results[job["name"]] = papers.DDPResult(
            job["name"], root, [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(2)],
            torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False), context)
    return results


def ddp_result(ddp_runs: dict, name: str):
    """One shared-launch run by name; fails the calling test with that run's error if it did not finish."""
    r = ddp_runs.get(name)
    if not hasattr(r, "ckpt"):
        pytest.fail(f"DDP run {name!r} failed:\n{r}")
    return r


@pytest.fixture(scope="session")
def teacher_release(tmp_path_factory) -> Path:
    """A tiny 784-32-10 MLP release to distil from."""
    import torch

    import zoo

    torch.manual_seed(0)
    teacher = zoo.create("mlp", in_features=784, hidden=[32], num_classes=10)
    return zoo.save_pretrained(teacher, tmp_path_factory.mktemp("teacher") / "release")


@pytest.fixture(scope="session")
def fixture_data(idx_dir):
    """The fixture IDX files as a set-up IDXDataModule (200 train, 40 val, 40 test images)."""
    from zoo.data import IDXDataModule

    dm = IDXDataModule("fashion-mnist", data_dir=str(idx_dir), val_size=40, batch_size=20)
    dm.setup()
    return dm


def image_batch(n: int = 12):
    """A seeded batch of n 28x28 inputs and labels 0..9 cycling: for checking loss formulas by hand."""
    import torch

    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10


def round_trip(module, tmp_path: Path, x):
    """save_pretrained -> zoo.load: every tensor and the eval-mode output on `x` (a tuple: the arguments) must be
    bit-identical."""
    import torch

    import zoo

    back = zoo.load(zoo.save_pretrained(module, tmp_path / "release"))
    assert type(back) is type(module)
    assert module.state_dict().keys() == back.state_dict().keys()
    for k, v in module.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    args = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        assert torch.equal(module.eval()(*args), back(*args))
    return back
