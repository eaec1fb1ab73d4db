"""What the reference benchmarks share: interleaved timing of our hot path and a reference's, and the row that
`benchmarks/run.py` prints for each comparison (medians, ratio, and the spread of the per-repeat ratios)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Row:
    """One hot path measured on both sides: `ours` and `theirs` hold one value per repeat, in `unit`; a rate
    (images/s) when `higher_is_better`, else a time (ms/step, s). `ratio` is always speed ours / reference."""
    hot_path: str
    reference: str
    unit: str
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    higher_is_better: bool = False
    target: float | None = None
    note: str = ""

    def _ratios(self) -> list[float]:
        pairs = zip(self.ours, self.theirs)
        return [o / t if self.higher_is_better else t / o for o, t in pairs]

    @property
    def ratio(self) -> float:
        return statistics.median(self._ratios())

    @property
    def spread(self) -> tuple[float, float]:
        r = self._ratios()
        return min(r), max(r)


def seconds(fn: Callable[[], object], sync: Callable[[], None] = lambda: None) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per call of each function, the functions taking turns in every repeat so that drifting machine
    load hits all of them alike; `warmup` untimed calls of each first."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            out[k].append(seconds(fn, sync))
    return out


def squared_error_step(module, fn: Callable[[], object], target) -> Callable[[], None]:
    """A timed training step's work: the forward `fn()`, a squared error against `target`, the backward into
    `module`'s weights (gradients cleared first)."""
    def run() -> None:
        module.zero_grad()
        (fn() - target).square().mean().backward()
    return run


PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::_grouped_mm")


def product_share(fn: Callable[[], object], calls: int = 2) -> float:
    """The fraction of `fn`'s CPU time (torch.profiler, self time) spent in matrix-product kernels, after one
    untimed call. An implementation that runs the same products at the same speed and everything else for free is
    at most 1 / share times faster: the ceiling that a missed target is measured against."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in PRODUCTS) / total


def ceiling_note(share: float, what: str) -> str:
    return (f"{what}'s matrix products take {share:.0%} of its time: running the same products at the same speed "
            f"and everything else for free, an implementation is at most {1 / share:.2f}x faster")


def print_rows(rows: list[Row]) -> None:
    """The plain-text table: hot path, reference, medians of both, ratio and the per-repeat ratio range."""
    for r in rows:
        lo, hi = r.spread
        print(f"{r.hot_path}\n  {r.reference:<34} {statistics.median(r.theirs):10.4g} {r.unit}\n"
              f"  {'zoo':<34} {statistics.median(r.ours):10.4g} {r.unit}   ratio {r.ratio:.2f}x "
              f"(repeats {lo:.2f}-{hi:.2f})" + (f"   target >= {r.target}x" if r.target else "")
              + (f"\n  ({r.note})" if r.note else ""))
