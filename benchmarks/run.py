"""Every reference benchmark in benchmarks/, one table: each hot path of ours against its reference implementation,
which is imported at run time from a checkout the user passes (nothing of it is in the zoo).

    python benchmarks/run.py --ref capsnet=/tmp/ref-capsule-networks --ref grbm=/tmp/ref-grbm \\
        --ref ff=/tmp/ref-ff --ref cka=/path/to/google-research --ref moe=/tmp/ref-moe [--repeats 3] [--only ff,cka] \\
        [--variants compile,bf16] [--threads N] [--device cpu] [--write docs/benchmarks.md]

Within each benchmark the two sides take turns in every repeat, so drifting machine load hits both alike. The
table gives the median of each side, the ratio of speeds (ours / reference; > 1: ours is faster), the range of
the per-repeat ratios and the target of issue 17. References without a checkout are listed as skipped; scripts
with no external reference (overhead, start-up, forward gradients) are named and run alone. `--write` puts the
table, machine, versions and thread counts into a marked section of the given Markdown file (replacing only the
previous output of this script). Both sides run under the allocator setting of the `zoo` command (`--malloc
system` for glibc's defaults; see zoo/_runtime.py).
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _compare import Row  # noqa: E402
from zoo._runtime import keep_freed_memory  # noqa: E402

#: key -> (module in benchmarks/, the reference it compares with; None: built into the script)
BENCHMARKS = {
    "ff": ("forward_forward", "loeweX/Forward-Forward"),
    "capsnet": ("capsnet", "gram-ai/capsule-networks"),
    "grbm": ("grbm", "DSL-Lab/GRBM"),
    "cka": ("cka", "google-research/google-research (representation_similarity/Demo.ipynb)"),
    "moe": ("moe", "davidmrau/mixture-of-experts"),
    "dmfa": ("dmfa", None),
    "cvxnet": ("cvxnet", None),
    "glom": ("glom", None),
    "nasa": ("nasa", None),
    "canonical_capsules": ("canonical_capsules", "canonical-capsules/canonical-capsules"),
    "render": ("render", None),
    "deep_lambertian": ("deep_lambertian", None),
    "nam": ("nam", None),
}


def measure(key: str, ref: Path | None, repeats: int, device: str, variants: tuple[str, ...]) -> list[Row]:
    module = importlib.import_module(BENCHMARKS[key][0])
    if key == "ff":
        return module.reference_rows(ref, repeats, device=device, variants=variants)
    if key == "capsnet":
        return module.rows(ref, repeats, device=device)
    if key == "grbm":
        return module.rows(str(ref), repeats, device=device)
    if key in ("cka", "moe", "canonical_capsules"):
        return module.rows(ref, repeats, device=device)
    return module.rows(repeats, device=device)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    mem = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0.0) if Path("/proc/meminfo").exists() else 0.0
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    blas = ""
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(dict.fromkeys(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()
                                       if i["user_api"] == "blas"))
    except ImportError:
        pass
    import lightning

    return (f"{os.cpu_count()} cores of {model or platform.machine()} ({torch.backends.cpu.get_cpu_capability()}), "
            f"{mem:.0f} GiB, {gpu}; Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), numpy {np.__version__} (BLAS: {blas or 'unknown'}), "
            f"lightning {lightning.__version__}; {datetime.date.today()}")


def table(rows: list[Row]) -> list[str]:
    lines = ["| hot path | reference | reference (median) | zoo (median) | ratio | per-repeat ratios | target |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r.spread
        met = "" if r.target is None else f"≥ {r.target:g}x {'met' if r.ratio >= r.target else 'missed'}"
        lines.append(f"| {r.hot_path} | {r.reference} | {statistics.median(r.theirs):.4g} {r.unit} | "
                     f"{statistics.median(r.ours):.4g} {r.unit} | {r.ratio:.2f}x | {lo:.2f}-{hi:.2f} | {met} |")
    return lines


def write_section(path: Path, text: str, script: str = "run") -> None:
    """Replace the text between this script's markers in `path`, or append a section with them."""
    begin, end = f"<!-- benchmarks/{script}.py: begin -->", f"<!-- benchmarks/{script}.py: end -->"
    doc = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        title = "on a GPU" if script == "gpu" else "on this machine"
        doc = doc.rstrip("\n") + f"\n\n## One table against the references, {title} (`benchmarks/{script}.py`)\n\n"
        doc += block + "\n"
    path.write_text(doc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", action="append", default=[], metavar="KEY=PATH",
                   help=f"a reference checkout; keys: {', '.join(k for k, v in BENCHMARKS.items() if v[1])}")
    p.add_argument("--only", default="", help="comma-separated keys to run (default: all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default="", help="extra FF rows: compile, bf16 (comma-separated)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--write", type=Path, default=None, help="Markdown file whose run.py section to (re)write")
    p.add_argument("--malloc", choices=("zoo", "system"), default="zoo",
                   help="zoo: glibc keeps freed blocks up to 1 GiB for reuse, as the `zoo` command sets it (both "
                   "sides run under it); system: glibc's defaults")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    kept = a.malloc == "zoo" and keep_freed_memory()
    refs = {}
    for item in a.ref:
        key, _, path = item.partition("=")
        if key not in BENCHMARKS or not BENCHMARKS[key][1]:
            p.error(f"--ref {item}: unknown key {key!r}")
        refs[key] = Path(path).expanduser()
    keys = [k for k in BENCHMARKS if not a.only or k in a.only.split(",")]
    variants = tuple(filter(None, a.variants.split(",")))
    rows, skipped, notes = [], [], []
    for key in keys:
        needs = BENCHMARKS[key][1]
        if needs and key not in refs:
            skipped.append(f"{key}: {needs} (no checkout; pass --ref {key}=PATH)")
            continue
        print(f"running {key} ...", file=sys.stderr, flush=True)
        got = measure(key, refs.get(key), a.repeats, a.device, variants)
        rows += got
        notes += [f"{r.hot_path}: {r.note}" for r in got if r.note]
    alone = sorted(f.stem for f in HERE.glob("*.py")
                   if not f.stem.startswith("_") and f.stem not in {"run", "gpu"}
                   and f.stem not in {m for m, _ in BENCHMARKS.values()})
    allocator = ("glibc keeps freed blocks up to 1 GiB (the `zoo` command's setting, both sides)" if kept
                 else "glibc's defaults")
    lines = [f"Machine: {machine()}; allocator: {allocator}.", "",
             f"`python benchmarks/{' '.join(shlex.quote(x) for x in ['run.py', *sys.argv[1:]])}`"
             f" (median of {a.repeats} interleaved repeats, device {a.device}):", "", *table(rows), ""]
    lines += [f"- {n}" for n in notes]
    lines += [f"- skipped: {s}" for s in skipped]
    lines += [f"- no external reference, run alone: {', '.join(f'benchmarks/{m}.py' for m in alone)}"]
    text = "\n".join(lines)
    print(text)
    if a.write:
        write_section(a.write, text)


if __name__ == "__main__":
    main()
