"""A local two-node Ray cluster for the tests (``ray.cluster_utils.Cluster``), once per
session, on loopback, with token authentication on. Registered in conftest.py as a plugin so
every test module shares the one cluster (a process can join only one).

Without Ray the tests fail under CI=true (``make test`` installs ``hashwatch[ray]``) and are
skipped elsewhere."""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

import pytest

NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


# Ray binds a node to the machine's reachable address unless this is "0"; the tests keep all
# cluster traffic on loopback
LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass
class RayCluster:
    cluster: Any
    worker: Any  # the second (non-head) node; a test may remove it (see ensure_two_nodes)

    @property
    def address(self) -> str:
        return self.cluster.address

    def ensure_two_nodes(self) -> None:
        """Add a second node again if a test removed it."""
        if self.worker is None:
            self.add_worker()

    def add_worker(self) -> None:
        import ray

        self.worker = self.cluster.add_node(**NODE)
        self.cluster.wait_for_nodes()
        deadline = time.monotonic() + 60
        while ray.cluster_resources().get("CPU", 0) < 2:
            assert time.monotonic() < deadline, "second node did not join"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    if importlib.util.find_spec("ray") is None:
        msg = "Ray not installed (pip install 'hashwatch[ray]'; make test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", LOOPBACK)}
    os.environ[LOOPBACK] = "0"  # every node on 127.0.0.1 (read when Ray is first imported)
    # token authentication, as hashwatch recommends; the token reaches the cluster's processes
    # and the drivers the tests start through the environment (never a file in $HOME)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    from ray._raylet import Config

    Config.initialize("")  # Ray read its settings at import: make it see token mode
    import ray
    from ray.cluster_utils import Cluster

    if "ray._private.ray_constants" in sys.modules and \
            sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER:
        pytest.fail("Ray was imported before the cluster fixture: it would not use loopback")
    c = Cluster(initialize_head=True,
                head_node_args={**NODE, "include_dashboard": False},
                shutdown_at_exit=True)
    rc = RayCluster(c, None)
    try:
        ray.init(address=c.address, logging_level="WARNING")
        rc.add_worker()
        yield rc
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        Config.initialize("")
