"""Start-up cost: wall time of `zoo list` (a fresh process, as a user types it) and of `import zoo`, next
to `import lightning` (what `zoo list` must not pay). Best and median of N runs each.

    python benchmarks/startup.py [--runs 7]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def wall(cmd: list[str], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    a = p.parse_args()
    zoo_cmd = shutil.which("zoo")
    rows = {
        "python -c pass (interpreter)": [sys.executable, "-c", "pass"],
        "zoo list": [zoo_cmd, "list"] if zoo_cmd else [sys.executable, "-m", "zoo.cli", "list"],
        "python -c 'import zoo'": [sys.executable, "-c", "import zoo"],
        "python -c 'import lightning'": [sys.executable, "-c", "import lightning"],
    }
    results = {k: wall(v, a.runs) for k, v in rows.items()}
    base = results["python -c 'import lightning'"][1]
    print(f"{a.runs} runs each; median relative to `import lightning`")
    for k, (best, med) in results.items():
        print(f"{k:32s} best {best * 1000:7.0f} ms   median {med * 1000:7.0f} ms   {med / base:6.3f}x")


if __name__ == "__main__":
    main()
