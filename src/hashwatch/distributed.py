"""Ray, the distributed engine hashwatch uses beyond one machine: connecting, checking token
authentication, and an ordered map of a library function over jobs as Ray tasks.

The per-item functions stay the library's own (the scan's batch function, the private
table build's per-chunk functions); Ray only places them on the cluster's CPUs, retries a
task whose worker or node died, and brings the results back to the driver.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 256 * 2**20  # a local cluster's shared memory: results are small
# Ray binds a new local cluster to the machine's reachable address unless this is "0"
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# A local cluster started here lives for one run and nobody watches it: it skips what only a
# dashboard or a metrics scraper would read (metrics, per-handler event statistics in every
# Ray process, the task timeline). Measured on a quiet machine, Ray's own processes idle at
# ~0.033 CPU-s per second with or without these (BENCHMARKS.md, beyond one machine): they
# cost little here, but nothing reads them. A cluster given by address keeps its settings.
LOCAL_SYSTEM_CONFIG = {"enable_metrics_collection": False, "event_stats": False,
                       "enable_timeline": False}


def ray_connect(address: str | None = None, workers: int | None = None) -> Any:
    """Connect to the Ray cluster at ``address``, or start a new one on this machine (never
    joining one already running here): ``workers`` CPUs, on 127.0.0.1 when Ray is first
    imported here, token authentication on (Ray >= 2.52 makes a token for a new local
    cluster, ``~/.ray/auth_token``), no dashboard or metrics (``LOCAL_SYSTEM_CONFIG``; Ray
    sends no usage statistics from a cluster ``ray.init`` starts). A cluster started with
    ``RAY_AUTH_MODE=token`` needs its token in ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``.

    Returns the ``ray`` module. Raises ``ImportError`` (with the install hint) without Ray."""
    if address is None and "ray" not in sys.modules:
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the ray engine needs Ray: pip install 'hashwatch[ray]'") from exc
    if ray.is_initialized():
        return ray
    kw: dict[str, Any] = {"logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kw)
    else:
        # "local": always a new cluster of our own; None would join whatever cluster was
        # started last on this machine (another user's, on a shared host)
        ray.init(address="local", num_cpus=workers or os.cpu_count() or 1,
                 include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                 _system_config=LOCAL_SYSTEM_CONFIG, **kw)
    return ray


def ray_token_auth() -> bool | None:
    """Whether this process talks to Ray with token authentication (None: Ray cannot say)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:
        return None
    return bool(is_token_auth_enabled())


def ray_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _call_spread(fn: Callable[[tuple[Any, ...]], Any], *args: Any) -> Any:
    # the job's parts travel as separate task arguments: Ray keeps a small one (a secret
    # scalar) inline in the task instead of in the object store, which may spill to disk
    return fn(args)


def ray_ordered_map(fn: Callable[[Any], Any], jobs: Iterable[tuple[Any, ...]], *,
                    ahead: int = 2, max_retries: int = 3) -> Iterator[Any]:
    """``map(fn, jobs)`` as Ray tasks (one CPU each), results in job order, at most
    ``ahead`` jobs per cluster CPU in flight (bounded memory). ``fn`` must be importable by
    the workers (a module-level function of an installed package); each job is a tuple whose
    items travel as separate task arguments. A task whose worker process or node dies is
    retried ``max_retries`` times; then the error is raised (``ray.exceptions``)."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=max_retries)(_call_spread)
    window = ray_cpus() * max(1, ahead)
    pending: deque[Any] = deque()
    try:
        for job in jobs:
            pending.append(task.remote(fn, *job))
            if len(pending) >= window:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())
    finally:  # stopped early: do not leave the cluster computing what nobody will read
        for ref in pending:
            ray.cancel(ref)
