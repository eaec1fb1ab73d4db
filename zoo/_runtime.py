"""Process-wide settings that the `zoo` command applies before it trains (never on `import zoo` or a call of
`zoo.cli.main` from Python: a library does not change its host process's allocator)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: set to 1 to leave glibc's malloc as it is
OPT_OUT = "ZOO_SYSTEM_MALLOC"


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Let glibc's malloc serve blocks up to `limit` bytes from its heap and keep freed ones for reuse.

    By default glibc maps every block above 32 MiB afresh (mmap) and unmaps it on free, so a CPU step whose
    temporaries are that large pays the kernel to fault in and zero their pages again at every step. CapsNet's
    routing at batch 100 makes 571 MiB of such pages per step; on the 2-core build VM fresh pages filled at 3.7
    GiB/s against 25.8 GiB/s for reused ones, and the routing took 275 ms a step instead of 105 ms
    (docs/benchmarks.md). Only the allocation changes, not the arithmetic (CapsNet's parameters after three Adam
    steps hash the same with and without it). The cost is memory: up to `limit` of freed heap stays with the
    process until it exits.

    Applied only on Linux with glibc, and not when the environment sets ZOO_SYSTEM_MALLOC=1 or chooses the
    thresholds itself (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, or GLIBC_TUNABLES). Returns whether it
    was applied."""
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT, "0") not in ("", "0"):
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    try:  # musl and other libcs have no mallopt
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
