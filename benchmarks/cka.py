"""CKA speed: zoo.metrics' linear and RBF CKA against the official functions of Kornblith et al. (2019), those of
google-research `representation_similarity/Demo.ipynb`, on the same float64 features, in one process.

    python benchmarks/cka.py /path/to/google-research [--rbf-n 5000] [--linear-n 10000] [--features 512] [--repeats 3]

The notebook's function cell (gram_linear, gram_rbf, center_gram, cka, feature_space_linear_cka) is read from the
checkout's notebook file and executed at run time; nothing of it is in the zoo. The features are the notebook's
tutorial data at a larger size: x ~ N(0, 1), y = x + N(0, 1), [n, 512]. The RBF rows use threshold 0.5 (the
notebook's), the linear rows the feature-space form on both sides. Both sides must agree to 1e-9.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from _compare import Row, interleaved, print_rows
from zoo.metrics import linear_cka, rbf_cka

NOTEBOOK = Path("representation_similarity/Demo.ipynb")


def notebook_functions(checkout: Path) -> dict:
    """The namespace of the notebook's code cell that defines `feature_space_linear_cka`."""
    path = checkout / NOTEBOOK if (checkout / NOTEBOOK).is_file() else checkout / NOTEBOOK.name
    if not path.is_file():
        raise SystemExit(f"{checkout / NOTEBOOK} not found: pass a google-research checkout "
                         "(or its representation_similarity folder)")
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and "def feature_space_linear_cka" in source:
            namespace: dict = {}
            exec(compile(source, str(path), "exec"), namespace)
            return namespace
    raise SystemExit(f"{path} has no cell defining feature_space_linear_cka")


def features(n: int, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, p, dtype=torch.float64, generator=g)
    return x, x + torch.randn(n, p, dtype=torch.float64, generator=g)


def rows(checkout: Path, repeats: int = 3, rbf_n: int = 5000, linear_n: int = 10000, p: int = 512,
         device: str = "cpu") -> list[Row]:
    """Seconds per CKA on each side (ours on `device`, the notebook's NumPy on the CPU), interleaved."""
    nb = notebook_functions(checkout)
    out = []
    for name, n, ours, theirs, target in (
            (f"CKA, RBF kernel (threshold 0.5), n = {rbf_n}, {p} features, float64", rbf_n,
             lambda x, y: rbf_cka(x, y, 0.5), lambda x, y: nb["cka"](nb["gram_rbf"](x, 0.5), nb["gram_rbf"](y, 0.5)),
             2.0),
            (f"CKA, linear, n = {linear_n}, {p} features, float64", linear_n, linear_cka,
             nb["feature_space_linear_cka"], 1.5)):
        xn, yn = (v.numpy() for v in features(n, p))
        x, y = (v.to(device) for v in features(n, p))
        a, b = float(ours(x, y)), float(theirs(xn, yn))
        if abs(a - b) > 1e-9:
            raise SystemExit(f"{name}: zoo {a!r} and the notebook {b!r} disagree")
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        fns = {"zoo": lambda: ours(x, y), "ref": lambda: theirs(xn, yn)}
        if "linear" in name:  # the three products of the feature-space form alone, on each side's BLAS
            fns["numpy products"] = lambda: (xn.T @ yn, xn.T @ xn, yn.T @ yn)
            fns["torch products"] = lambda: (x.T @ y, x.T @ x, y.T @ y)
        t = interleaved(fns, repeats, warmup=1, sync=sync)
        note = f"both give {a:.10f}"
        if "linear" in name:
            med = {k: statistics.median(v) for k, v in t.items()}
            note += (f"; the notebook's three products alone (XᵀY by GEMM, XᵀX and YᵀY by BLAS's symmetric SYRK) "
                     f"take {med['numpy products']:.3f} s, {med['numpy products'] / med['ref']:.0%} of its time; "
                     f"the zoo runs the same three products through NumPy's BLAS on the features as they are, "
                     f"without centred copies, and subtracts n·μμᵀ from the products (torch's three GEMMs "
                     f"alone take {med['torch products']:.3f} s). Any implementation doing these products with this "
                     f"BLAS is at most {med['ref'] / med['numpy products']:.2f}x faster than the notebook")
        out.append(Row(name, "official notebook (NumPy)", "s", t["zoo"], t["ref"], target=target, note=note))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkout", type=Path, help="a google-research checkout (or its representation_similarity)")
    p.add_argument("--rbf-n", type=int, default=5000)
    p.add_argument("--linear-n", type=int, default=10000)
    p.add_argument("--features", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")
    print_rows(rows(a.checkout, a.repeats, a.rbf_n, a.linear_n, a.features))


if __name__ == "__main__":
    main()
