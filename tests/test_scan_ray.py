"""``hashwatch scan --engine ray`` on the session's local two-node cluster: the same files as
the local engine and ``hashwatch match``; a worker killed mid-task, a node removed mid-job and
the driver killed and re-run all end with the same output files, none lost, none twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from hashwatch.scan import Manifest, RayEngine, ScanConfig, run_scan
from hashwatch.scan.output import iter_rows
from scan_fixtures import build_test_manifest, cli, make_scan_setup, match_cli, same_as_match
from test_scan import kill_after_first_shard, shard_bytes

LIMIT = 240  # seconds any one scan here may take before the test fails


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    s = make_scan_setup(tmp_path_factory.mktemp("scanray"))
    s["manifest"] = build_test_manifest(s)
    out = s["root"] / "out-local"
    cli("scan", "run", s["manifest"], "--out", out, "--db", s["db"], "-w", "1")
    s["local"] = out
    return s


def config(setup) -> ScanConfig:
    return ScanConfig(db=str(setup["db"]), index_path=str(setup["db"]) + ".pdq.idx")


def scan_in_thread(setup, out: Path, engine, **kw) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def go() -> None:
        try:
            box["result"] = run_scan(Manifest.open(setup["manifest"]), out, config(setup),
                                     engine, batch_size=1, **kw)
        except BaseException as exc:  # reported by the test thread
            box["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, box


def finish(t: threading.Thread, box: dict) -> None:
    t.join(LIMIT)
    assert not t.is_alive(), f"scan did not finish within {LIMIT} s"
    if "error" in box:
        raise box["error"]
    assert box["result"].summary["complete"]


def test_ray_equals_local_engine_and_match(ray_cluster, setup):
    ray_cluster.ensure_two_nodes()
    out = setup["root"] / "out-ray"
    engine = RayEngine(ray_cluster.address)
    assert engine.workers == 2 and engine.token_auth is True
    t, box = scan_in_thread(setup, out, engine)
    finish(t, box)
    assert shard_bytes(out) == shard_bytes(setup["local"])
    rows = list(iter_rows(out, 4))
    same_as_match(rows, match_cli(setup, [r["path"] for r in rows]))
    assert {r["state"] for r in rows} == {"matched", "clean", "error"}


def _task_processes() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "ray::_ray_scan_batch" in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_worker_killed_mid_task(ray_cluster, setup):
    out = setup["root"] / "out-kill-worker"
    t, box = scan_in_thread(setup, out, RayEngine(ray_cluster.address))
    killed = None
    deadline = time.monotonic() + LIMIT
    while killed is None and t.is_alive() and time.monotonic() < deadline:
        for p in _task_processes():
            p.send_signal(signal.SIGKILL)  # a worker process running a scan task
            killed = p.pid
            break
        time.sleep(0.01)
    finish(t, box)
    assert killed is not None, "no scan task was seen running"
    assert shard_bytes(out) == shard_bytes(setup["local"])


def test_driver_killed_and_rerun(ray_cluster, setup):
    out = setup["root"] / "out-kill-driver"
    cmd = [sys.executable, "-m", "hashwatch.cli", "scan", "run", str(setup["manifest"]),
           "--out", str(out), "--db", str(setup["db"]), "--engine", "ray", "--address",
           ray_cluster.address, "--batch-size", "1"]
    kill_after_first_shard(cmd, out, timeout=LIMIT)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMIT, env=os.environ)
    assert res.returncode == 0, res.stderr[-3000:]
    assert shard_bytes(out) == shard_bytes(setup["local"])
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert runs[-1]["engine"] == "ray" and runs[-1]["files_run"] < 10


def test_scan_starts_a_local_cluster_of_its_own(setup):
    """Without ``--address`` the scan starts a Ray cluster of its own on this machine (the
    settings of ``hashwatch.distributed.ray_connect``), never the session's, and gives the
    same files as the local engine."""
    out = setup["root"] / "out-own-cluster"
    cmd = [sys.executable, "-m", "hashwatch.cli", "scan", "run", str(setup["manifest"]),
           "--out", str(out), "--db", str(setup["db"]), "--engine", "ray", "-w", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMIT, env=os.environ)
    assert res.returncode == 0, res.stderr[-3000:]
    assert shard_bytes(out) == shard_bytes(setup["local"])
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert runs[-1]["engine"] == "ray" and runs[-1]["files_run"] == 10


def test_node_removed_mid_job(ray_cluster, setup):
    """Runs last in this module: it removes the second node (a later test that needs two
    calls ``ensure_two_nodes``)."""
    ray_cluster.ensure_two_nodes()
    out = setup["root"] / "out-node-lost"
    engine = RayEngine(ray_cluster.address)
    started = threading.Event()
    seen: dict = {}
    t, box = scan_in_thread(setup, out, engine,
                            progress=lambda p: p.files_done and (
                                seen.setdefault("files", p.files_done), started.set()))
    assert started.wait(LIMIT), "no file finished"
    removed_node = ray_cluster.worker
    ray_cluster.cluster.remove_node(removed_node, allow_graceful=False)
    ray_cluster.worker = None
    assert t.is_alive() and seen["files"] < 10  # removed mid-job
    finish(t, box)
    assert box["result"].files_run == 10
    assert shard_bytes(out) == shard_bytes(setup["local"])
