"""What this machine's CPU can do, as Linux reports it: the instruction-set flags some choices depend on."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def cpu_flags() -> frozenset[str]:
    """The flags of /proc/cpuinfo ("avx2", "avx512f", "avx512_bf16", …); empty where it cannot be read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(flag for line in text.splitlines() if line.startswith("flags") for flag in line.partition(":")[2].split())
