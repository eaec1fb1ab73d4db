"""zoo._runtime: the allocator setting of the `zoo` command keeps freed large blocks for reuse (checked by page
faults in a fresh interpreter, so this process's allocator is left alone) and honours the opt-out."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zoo._runtime import OPT_OUT, keep_freed_memory

PROBE = """
import resource
import torch
from zoo._runtime import keep_freed_memory
applied = keep_freed_memory()
def step():  # three 40 MB temporaries: above glibc's largest dynamic mmap threshold (32 MiB)
    a = torch.ones(10_000_000)
    b = a * 2
    return float((b + a)[0])
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sum(faults[-8:]))
"""


def _probe(**env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items()
             if k not in (OPT_OUT, "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_large_blocks_are_reused_without_page_faults():
    applied, kept = _probe()
    assert applied
    applied, default = _probe(**{OPT_OUT: "1"})
    assert not applied
    assert default > 8 * 25_000  # glibc's default: each 40 MB block mapped afresh, 29,000 pages every step
    assert kept < default / 4  # kept: the heap settles within a few steps, then reuses its pages (0 faults)


def test_the_environment_wins(monkeypatch):
    monkeypatch.setenv(OPT_OUT, "1")
    assert not keep_freed_memory()
    monkeypatch.delenv(OPT_OUT)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not keep_freed_memory()


def test_only_the_zoo_command_sets_it(monkeypatch, capsys):
    from zoo import cli

    calls = []
    monkeypatch.setattr("zoo._runtime.keep_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.setattr(sys, "argv", ["zoo", "convert", "no-such-entry"])
    assert cli.main() == 2  # the unknown name is refused in one line, after the setting
    assert calls == [True]
    assert cli.main(["convert", "no-such-entry"]) == 2  # called from Python: the host process is left alone
    assert calls == [True]
    monkeypatch.setattr(sys, "argv", ["zoo", "list", "no-such-entry"])
    cli.main()
    assert calls == [True]  # catalogue commands do not train
    assert "no-such-entry" in capsys.readouterr().err
