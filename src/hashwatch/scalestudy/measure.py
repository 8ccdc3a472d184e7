"""What the scale study measures about its own process: peak and current RSS, bytes of an
index folder, percentiles that tolerate an empty list."""

from __future__ import annotations

import math
import resource
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_rss() -> dict[str, float]:
    """Current RSS (MiB), anonymous and file-backed, from /proc/self/status."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    except OSError:
        pass
    return out


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def pct(values: Sequence[float], p: float) -> float:
    return float(np.percentile(values, p)) if len(values) else math.nan
