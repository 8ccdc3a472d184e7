"""``hashwatch scan`` with the local engine: manifest, results equal ``hashwatch match``,
resume after a killed driver gives the same files, error rows, idempotent SQL table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from conftest_pg import pg_db, pg_url  # noqa: F401
from hashwatch.scan import Manifest, ManifestError, build_manifest, file_id
from hashwatch.scan.output import iter_rows
from hashwatch.scan.sqltable import ResultsTable
from scan_fixtures import build_test_manifest, cli, make_scan_setup, match_cli, same_as_match


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_scan_setup(tmp_path_factory.mktemp("scan"))


@pytest.fixture(scope="module")
def manifest(setup):
    return build_test_manifest(setup)


@pytest.fixture(scope="module")
def baseline(setup, manifest):
    """One uninterrupted local scan, in this process."""
    out = setup["root"] / "out-base"
    cli("scan", "run", manifest, "--out", out, "--db", setup["db"], "-w", "1",
        "--batch-size", "2")
    return out


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("part-*.parquet"))}


def test_manifest_shards_ids_and_list_files(setup, manifest, tmp_path):
    m = Manifest.open(manifest)
    files = [r for i in range(m.shards) for r in m.shard(i).to_pylist()]
    assert m.files == len(files) == 10 and m.shards == 4  # 8 evidence files, missing, FIFO
    assert all(r["file_id"] == file_id(r["path"]) for r in files)
    assert any(r["path"].endswith("missing/nothing.jpg") and r["size"] is None for r in files)
    # CSV and Parquet lists name the same files (relative to the list's folder), a folder is
    # walked, duplicates are kept once, and the ids and shards are the same every time
    paths = [r["path"] for r in files if r["size"] is not None]
    pacsv.write_csv(pa.table({"uri": ["file://" + p for p in paths]}), tmp_path / "l.csv")
    pq.write_table(pa.table({"path": [os.path.relpath(p, tmp_path) for p in paths]}),
                   tmp_path / "l.parquet")
    m2 = build_manifest(tmp_path / "m2", [], [tmp_path / "l.csv", tmp_path / "l.parquet"],
                        shard_size=3)
    again = [r for i in range(m2.shards) for r in m2.shard(i).to_pylist()]
    assert [r["file_id"] for r in again] == [r["file_id"] for r in files if r["size"] is not None]
    with pytest.raises(ManifestError, match="already holds a manifest"):
        build_manifest(tmp_path / "m2", [setup["evidence"]])
    (tmp_path / "s3.txt").write_text("s3://bucket/a.jpg\n")
    with pytest.raises(ManifestError, match="only local paths and file://"):
        build_manifest(tmp_path / "m3", [], [tmp_path / "s3.txt"])


def test_scan_rows_equal_hashwatch_match(setup, manifest, baseline):
    rows = list(iter_rows(baseline, Manifest.open(manifest).shards))
    by_match = match_cli(setup, [r["path"] for r in rows])
    same_as_match(rows, by_match)
    state = {Path(r["path"]).name: r["state"] for r in rows}
    assert state["exact.jpg"] == state["flipped.jpg"] == state["small.webp"] == "matched"
    assert state["broken.jpg"] == state["nothing.jpg"] == state["pipe"] == "error"
    assert state["readme.txt"] == "error"  # not an image: its crypto hashes are still there
    flipped = next(r for r in rows if r["path"].endswith("flipped.jpg"))
    assert flipped["matches"][0]["route"] != "full/full"  # found by a robust view
    exact = next(r for r in rows if r["path"].endswith("exact.jpg"))
    assert {m["signal"] for m in exact["matches"] if m["exact"]} == {"md5", "sha1", "sha256"}
    assert exact["sha256"] and exact["pdq"] and exact["pdq_quality"] >= 50
    summary = json.loads((baseline / "summary.json").read_text())
    assert summary["complete"] and summary["files"] == 10
    assert summary["states"] == {"matched": 3, "clean": 3, "error": 4}
    assert summary["categories"] == {"uk:B": 3}
    assert oct((baseline / "shards" / "part-00000.parquet").stat().st_mode & 0o777) == "0o600"


def _scan_cmd(setup, manifest, out, *extra):
    return [sys.executable, "-m", "hashwatch.cli", "scan", "run", str(manifest), "--out",
            str(out), "--db", str(setup["db"]), "--batch-size", "1", *extra]


def kill_after_first_shard(cmd: list[str], out: Path, timeout: float = 120) -> None:
    """Start the driver, SIGKILL it once its first shard is written, before the last."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not list((out / "shards").glob("part-*.parquet")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no shard written in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert 1 <= len(list((out / "shards").glob("part-*.parquet"))) < 4


def test_driver_killed_then_rerun_gives_identical_files(setup, manifest, baseline):
    out = setup["root"] / "out-killed"
    cmd = _scan_cmd(setup, manifest, out, "-w", "1")
    kill_after_first_shard(cmd, out)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert shard_bytes(out) == shard_bytes(baseline)
    a = json.loads((out / "summary.json").read_text())
    assert a == json.loads((baseline / "summary.json").read_text())
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert runs[-1]["files_run"] < 10  # the re-run skipped the finished shards


def test_other_scan_and_changed_lists_are_refused(setup, manifest, baseline, tmp_path):
    res = cli("scan", "run", manifest, "--out", baseline, "--db", setup["db"], "--no-robust",
              code=2)
    assert "holds another scan" in res.stderr
    db2 = tmp_path / "copy.db"
    db2.write_bytes(setup["db"].read_bytes())
    out = tmp_path / "o"
    cli("scan", "run", manifest, "--out", out, "--db", db2, "-w", "1",
        "--index-path", tmp_path / "i.idx")
    cli("lists", "add", "caid", setup["evidence"] / "c0" / "kodim05.jpg", "--db", db2)
    res = cli("scan", "run", manifest, "--out", out, "--db", db2, "-w", "1",
              "--index-path", tmp_path / "i.idx", code=2)
    assert "lists changed" in res.stderr


def test_results_table_is_idempotent(setup, manifest, baseline, tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    out = tmp_path / "o"
    cli("scan", "run", manifest, "--out", out, "--db", setup["db"], "-w", "1",
        "--results-db", url)
    sid = json.loads((out / "scan.json").read_text())["scan_id"]
    t = ResultsTable(url, sid)
    assert t.count() == 10 and t.done_shards() == {0, 1, 2, 3}
    rows = list(iter_rows(out, 4))
    t.write_shard(0, rows[:3])  # a shard written again (a retried run) stays one copy
    assert t.count() == 10
    # a shard in Parquet but not yet in the table is caught up on the next run
    with t.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM hashwatch_scan_shards WHERE shard = 2")
        conn.exec_driver_sql("DELETE FROM hashwatch_scan_results WHERE shard = 2")
    assert t.count() == 7
    cli("scan", "run", manifest, "--out", out, "--db", setup["db"], "-w", "1",
        "--results-db", url)
    assert t.count() == 10 and t.done_shards() == {0, 1, 2, 3}
    t.close()


def test_results_table_on_postgresql(pg_db, baseline):  # noqa: F811
    """The same idempotent per-shard writes on PostgreSQL (JSON matches, 64-bit sizes)."""
    rows = list(iter_rows(baseline, 4))
    t = ResultsTable(pg_db, "scan-a")
    try:
        for _ in range(2):  # a shard written twice (retry, resume) is kept once
            t.write_shard(0, rows[:3])
            t.write_shard(1, rows[3:6])
        assert t.count() == 6 and t.done_shards() == {0, 1}
        other = ResultsTable(pg_db, "scan-b")  # another scan's rows are its own
        other.write_shard(0, rows[:3])
        assert other.count() == 3 and t.count() == 6
        other.close()
        hit = next(r for r in rows[:6] if r["matches"])
        with t.engine.connect() as conn:
            got = conn.exec_driver_sql(
                "SELECT matches FROM hashwatch_scan_results WHERE scan_id = 'scan-a' "
                "AND file_id = %(f)s", {"f": hit["file_id"]}).scalar_one()
        assert got == hit["matches"]
    finally:
        t.close()


MID_JOB_S = 0.3  # a worker seen alive this long (s) is past its start-up


def test_local_pool_worker_killed_mid_job(setup, manifest, baseline, tmp_path, caplog):
    """A pool worker killed mid-job breaks the pool: the batches it may have held run again
    one file per fresh process, and the files come out the same."""
    import threading

    import psutil

    from hashwatch.scan import LocalEngine, ScanConfig, run_scan

    cfg = ScanConfig(db=str(setup["db"]), index_path=str(setup["db"]) + ".pdq.idx")
    box: dict = {}
    out = tmp_path / "o"

    def go() -> None:
        box["r"] = run_scan(Manifest.open(manifest), out, cfg, LocalEngine(2), batch_size=1)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    killed = None
    seen: dict[int, float] = {}  # worker pid -> when first seen
    deadline = time.monotonic() + 120
    while killed is None and t.is_alive() and time.monotonic() < deadline:
        now = time.monotonic()
        for server in psutil.Process().children():
            if "forkserver" in " ".join(server.cmdline()):
                for w in server.children():
                    # mid-job, as the name says: the old loop killed the first worker within
                    # ~10 ms of its fork, and in its one failure (a full run) the forkserver
                    # itself died right after, which no scan recovers from in-process
                    if now - seen.setdefault(w.pid, now) >= MID_JOB_S and killed is None:
                        w.send_signal(signal.SIGKILL)
                        killed = w.pid
        time.sleep(0.01)
    t.join(240)
    assert not t.is_alive() and killed is not None
    assert box["r"].summary["complete"] and shard_bytes(out) == shard_bytes(baseline)
    assert "worker process died" in caplog.text
