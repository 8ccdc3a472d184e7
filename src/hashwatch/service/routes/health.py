"""``/v1/health``: liveness and readiness (no key needed; no data)."""

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from hashwatch.service.allocator import arena_count, malloc_figures
from hashwatch.service.deps import API
from hashwatch.service.errors import error_response

router = APIRouter(prefix=f"{API}/health", tags=["health"])

# The standard ``process_*`` figures of this worker (resident memory, CPU seconds, open files,
# start time), as every Prometheus client exports them: each worker answers /metrics for itself
# (several workers share one port), so a scrape also says which worker answered.
_PROCESS = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=_PROCESS)


@router.get("/live")
def live() -> dict[str, str]:
    """Liveness: the process answers. No key needed (no data)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {}})
def ready(request: Request) -> Response:
    """Readiness: 200 once the index is loaded and current. No key needed."""
    svc = getattr(request.app.state, "service", None)
    if svc is None or not svc.ready.is_set():
        return error_response(503, "not_ready",
                              (svc.load_error if svc else None) or "index loading")
    m = svc.matcher
    feed = svc.feed_status()
    return JSONResponse({"status": "ready", "worker": {"pid": os.getpid(), "id": svc.worker_id},
                         "index_size": len(m.index),
                         "hash_views": m.views_held(),
                         "index_bytes": m.index.stats()["data_bytes"],
                         "feed_position": m.position, "last_refresh": svc.last_refresh,
                         "feed": feed})


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """This worker's counters in the Prometheus text format (no key needed; no data)."""
    svc = getattr(request.app.state, "service", None)
    lines = []

    def put(name: str, kind: str, value: float, help_: str) -> None:
        lines.extend([f"# HELP hashwatch_{name} {help_}", f"# TYPE hashwatch_{name} {kind}",
                      f"hashwatch_{name} {value}"])

    if svc is not None:
        c = svc.counters
        put("index_entries", "gauge", len(svc.matcher.index) if svc.matcher else 0,
            "PDQ entries held by this worker's index")
        put("feed_refreshes_total", "counter", c["feed_refreshes"], "change-feed reads")
        put("feed_changes_applied_total", "counter", c["feed_applied"],
            "change rows applied to the index")
        put("feed_errors_total", "counter", c["feed_errors"], "failed change-feed reads")
        put("feed_listening", "gauge", int(bool(svc.listener and svc.listener.connected)),
            "1 while LISTEN/NOTIFY push is connected")
        put("reconcile_runs_total", "counter", c["reconcile_runs"], "index reconciliations")
        put("reconcile_differences_total", "counter", c["reconcile_differences"],
            "index entries found different from the store (and repaired)")
        m = svc.matcher
        put("index_bytes", "gauge", m.index.stats()["data_bytes"] if m else 0,
            "bytes of the PDQ index's arrays (codes, ids, chunk tables) in this worker")
        put("index_save_failures_total", "counter", m.save_failures if m else 0,
            "failed saves of the index (the worker serves from memory and retries)")
        put("index_saved", "gauge", int(m is not None and m.save_error is None),
            "0 while the last save of the index failed")
        lines.extend(svc.feed_freshness.prometheus(
            "hashwatch_feed_notify_to_applied_seconds",
            "a change notification's arrival to the end of the refresh that applied it"))
        lines.extend(svc.feed_refresh_time.prometheus(
            "hashwatch_feed_refresh_seconds", "duration of one change-feed refresh"))
        lines.extend(svc.feed_refresh_cpu.prometheus(
            "hashwatch_feed_refresh_cpu_seconds", "CPU time of one change-feed refresh"))
        kpf = m.keypoint_feed if m else None
        put("keypoint_sets", "gauge", kpf.kp.live_slots if kpf else 0,
            "keypoint sets held by this worker's keypoint tier")
        put("malloc_mmap_threshold_fixed", "gauge", int(svc.malloc_tuned),
            "1 when this worker fixed the C allocator's mmap threshold at start-up")
        arenas = arena_count()
        if arenas is not None:
            put("malloc_arenas", "gauge", arenas, "malloc arenas of this worker (glibc)")
    mem = malloc_figures()
    if mem is not None:
        for key, help_ in (("arena_bytes", "bytes the malloc arenas took from the system"),
                           ("arena_free_bytes", "of those, free bytes malloc keeps for reuse"),
                           ("in_use_bytes", "bytes allocated from the malloc arenas"),
                           ("mmapped_bytes", "bytes of blocks malloc mapped on their own")):
            put(f"malloc_{key}", "gauge", mem[key], f"this worker's C allocator: {help_}")
    # (its start time: process_start_time_seconds)
    lines.extend(["# HELP hashwatch_worker_info the worker that answered this scrape",
                  "# TYPE hashwatch_worker_info gauge",
                  f'hashwatch_worker_info{{pid="{os.getpid()}"}} 1'])
    body = "\n".join(lines) + "\n" + generate_latest(_PROCESS).decode()
    return Response(body, media_type="text/plain; version=0.0.4")
