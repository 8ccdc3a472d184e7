"""The worker's C allocator: start-up fixes glibc's mmap threshold (hashwatch.service.allocator),
so a big array freed no longer sends the next ones into the malloc arenas, and /metrics shows
malloc's figures. Each case runs in a fresh process: the allocator setting is process-wide."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="the mmap threshold is a glibc setting")

# Starts the service (lifespan: Service.__init__) with the given threshold, then frees an
# 8 MiB array and allocates a 1 MiB one: with glibc's dynamic threshold the free raises the
# threshold to 8 MiB and the 1 MiB array comes from an arena; with it fixed at 128 KiB the
# 1 MiB array is mapped on its own (malloc's mapped bytes grow by at least 1 MiB).
SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from fastapi.testclient import TestClient
    from hashwatch.service.allocator import malloc_figures
    from hashwatch.service.app import create_app
    from hashwatch.service.settings import Settings

    settings = Settings(db=sys.argv[1], malloc_mmap_threshold=int(sys.argv[2]),
                        decode_isolation=False, reconcile_interval=0)
    with TestClient(create_app(settings)) as client:
        big = np.ones((8 << 20) // 8)
        del big
        before = malloc_figures()["mmapped_bytes"]
        small = np.ones((1 << 20) // 8)
        grown = malloc_figures()["mmapped_bytes"] - before
        metrics = client.get("/v1/health/metrics").text
    print(json.dumps({"grown": grown, "metrics": metrics}))
""")


def _run(tmp_path, threshold: int) -> tuple[int, dict[str, float]]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "hw.db"), str(threshold)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    gauges = {}
    for line in res["metrics"].splitlines():
        if line.startswith("hashwatch_malloc_"):
            name, value = line.split()
            gauges[name] = float(value)
    return res["grown"], gauges


def test_start_up_fixes_the_mmap_threshold_and_metrics_show_malloc(tmp_path):
    grown, gauges = _run(tmp_path, 128 * 1024)
    assert grown >= 1 << 20  # mapped on its own although 8 MiB were freed just before
    assert gauges["hashwatch_malloc_mmap_threshold_fixed"] == 1
    assert gauges["hashwatch_malloc_arena_bytes"] >= gauges["hashwatch_malloc_arena_free_bytes"]
    assert gauges["hashwatch_malloc_in_use_bytes"] > 0
    assert gauges["hashwatch_malloc_mmapped_bytes"] >= 1 << 20


def test_without_the_setting_glibc_s_dynamic_threshold_keeps_big_blocks_in_arenas(tmp_path):
    """The control: the same steps with the setting off (0) do not map the 1 MiB array, so
    the test above shows the setting's effect, not glibc's default."""
    grown, gauges = _run(tmp_path, 0)
    assert grown < 1 << 20
    assert gauges["hashwatch_malloc_mmap_threshold_fixed"] == 0
