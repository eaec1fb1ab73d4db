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
