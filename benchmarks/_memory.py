"""Memory of the running benchmark process, shared by the benchmark scripts (they run as scripts, so
this folder is on their import path)."""

from __future__ import annotations

from pathlib import Path


def rss_mib(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM, not inherited across exec unlike ru_maxrss) or current (VmRSS) resident
    set, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0
